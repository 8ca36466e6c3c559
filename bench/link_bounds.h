// The physical bounds of weight streaming that `tierserve bench offload` prints its figures
// against: the host-to-device copy bandwidth (Backend::copy of a large buffer; memcpy on the CPU
// backend, pinned-host-to-device DMA on a GPU) and the disk's sequential read bandwidth under
// --offload-dir, measured with fio (io_uring, O_DIRECT) as the benchmarks require.
#pragma once

#include <filesystem>

#include "common/status.h"
#include "kernels/backend.h"

namespace tierserve::bench {

// The best of three copies of 512 MiB host -> device, in bytes/s.
Result<double> measure_copy_bandwidth(Backend* backend);

// The device memory's bandwidth: the best of three device -> device copies of 1 GiB, counting
// the bytes read and written, in bytes/s (a GPU's HBM bound; on the CPU backend, memcpy's).
Result<double> measure_device_bandwidth(Backend* backend);

// The disk's sequential read bandwidth under `dir`, in bytes/s: the better of fio (4 MiB blocks,
// 64 in flight, O_DIRECT through io_uring, on a 1 GiB file it lays out, removed afterwards) and
// DiskStore reading the same file (8 MiB reads, 32 in flight, into huge-page buffers, as the
// weight streamer reads). Both count: fio's buffers are 4 KiB pages, which a device that takes
// few segments per request (virtio-blk: 254) splits, so fio alone can understate the disk.
// kNotFound when fio is not installed.
struct DiskReadBandwidth {
  double fio = 0, disk_store = 0;
  double best() const { return fio > disk_store ? fio : disk_store; }
};
Result<DiskReadBandwidth> disk_read_bandwidth(const std::filesystem::path& dir);

}  // namespace tierserve::bench
