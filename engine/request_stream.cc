#include "engine/request_stream.h"

namespace tierserve {

std::optional<RequestOutput> RequestStream::next() {
  std::unique_lock<std::mutex> lock(mutex_);
  ready_.wait(lock, [this] { return !queue_.empty() || unfinished_ == 0; });
  if (queue_.empty()) return std::nullopt;
  RequestOutput out = std::move(queue_.front());
  queue_.pop_front();
  return out;
}

std::optional<RequestOutput> RequestStream::poll() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (queue_.empty()) return std::nullopt;
  RequestOutput out = std::move(queue_.front());
  queue_.pop_front();
  return out;
}

bool RequestStream::done() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.empty() && unfinished_ == 0;
}

void RequestStream::push(RequestOutput output) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (output.finished) --unfinished_;
    queue_.push_back(std::move(output));
  }
  ready_.notify_all();
  if (on_ready_) on_ready_();
}

}  // namespace tierserve
