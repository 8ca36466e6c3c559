#include "kernels/cpu/onednn_matmul.h"

#include <dlfcn.h>

#include <cstring>
#include <dnnl.hpp>
#include <list>
#include <unordered_map>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/scratch_buffer.h"

namespace tierserve {
namespace {

using dnnl::memory;

// Primitives kept at most; the least recently used one is dropped beyond this. Each distinct
// slice shape is one entry, and a model has a handful of (n, k) per layer kind.
constexpr size_t kMaxPrimitives = 512;

memory::data_type to_dnnl(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return memory::data_type::f32;
    case DType::kBF16:
      return memory::data_type::bf16;
    case DType::kF16:
      return memory::data_type::f16;
    default:
      break;
  }
  TS_CHECK(false) << "oneDNN matmul of dtype " << dtype_name(dtype);
  return memory::data_type::undef;
}

struct ShapeHash {
  size_t operator()(const MatmulShape& s) const {
    size_t h = static_cast<size_t>(s.dtype) * 2 + (s.bias ? 1 : 0);
    h = h * 2 + (s.packed ? 1 : 0);
    for (int64_t v : {s.m, s.n, s.k, s.ldx, s.ldy}) {
      h ^= std::hash<int64_t>()(v) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    }
    return h;
  }
};

dnnl::matmul::primitive_desc make_pd(const MatmulShape& s, const dnnl::engine& engine) {
  const memory::data_type dt = to_dnnl(s.dtype);
  memory::desc src_md({s.m, s.k}, dt, {s.ldx, 1});
  memory::desc wei_md = s.packed ? memory::desc({s.k, s.n}, dt, memory::format_tag::any)
                                 : memory::desc({s.k, s.n}, dt, {1, s.k});
  memory::desc dst_md({s.m, s.n}, memory::data_type::f32, {s.ldy, 1});
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (s.bias) {
    memory::desc bias_md({1, s.n}, memory::data_type::f32, {s.n, 1});
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, wei_md, bias_md, dst_md), attr,
                                        engine);
  }
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, wei_md, dst_md), attr, engine);
}

// One slot's memory objects for an entry; their data handles are set per execution.
struct SlotMemory {
  memory src, weights, bias, dst, scratchpad;
};

using SetNumThreads = void (*)(int);

// The packed weight layout of [n, k] `dtype`: what a primitive with m = 1 picks.
memory::desc packed_desc(int64_t n, int64_t k, DType dtype, const dnnl::engine& engine) {
  return make_pd(MatmulShape{1, n, k, k, n, dtype, false, true}, engine).weights_desc();
}

}  // namespace

struct OnednnMatmul::Entry {
  MatmulShape shape;
  dnnl::matmul primitive;
  size_t scratchpad_bytes = 0;
  size_t weights_bytes = 0;
  std::vector<SlotMemory> slots;
};

struct OnednnMatmul::Impl {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  std::vector<dnnl::stream> streams;       // one per slot
  std::vector<ScratchBuffer> scratchpads;  // one per slot, sized for every prepared entry
  std::list<Entry> lru;                    // most recently used first
  std::unordered_map<MatmulShape, std::list<Entry>::iterator, ShapeHash> index;
  int64_t created = 0;
  int support[3] = {0, 0, 0};  // per f32/bf16/f16: 0 unknown, 1 supported, 2 not
};

void ensure_single_threaded_openmp() {
  // The OpenMP runtime is whichever one libdnnl loaded (libgomp for Debian's build); linking one
  // here could bring in a second runtime, so the symbol is looked up in the process instead.
  static const SetNumThreads set_num_threads =
      reinterpret_cast<SetNumThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  thread_local bool done = false;
  if (done) return;
  done = true;
  if (set_num_threads != nullptr) set_num_threads(1);
}

OnednnMatmul::OnednnMatmul(int num_slots) : impl_(std::make_unique<Impl>()) {
  TS_CHECK_GE(num_slots, 1);
  ensure_single_threaded_openmp();
  for (int i = 0; i < num_slots; ++i) impl_->streams.emplace_back(impl_->engine);
  impl_->scratchpads = std::vector<ScratchBuffer>(static_cast<size_t>(num_slots));
}

OnednnMatmul::~OnednnMatmul() = default;

bool OnednnMatmul::supports(DType dtype) {
  const int slot = dtype == DType::kF32    ? 0
                   : dtype == DType::kBF16 ? 1
                   : dtype == DType::kF16  ? 2
                                           : -1;
  if (slot < 0) return false;
  int& known = impl_->support[slot];
  if (known == 0) {
    ensure_single_threaded_openmp();
    known = 2;
    try {
      const MatmulShape probe{64, 64, 64, 64, 64, dtype, true};
      dnnl::matmul::primitive_desc pd = make_pd(probe, impl_->engine);
      // Without a kernel for the ISA, oneDNN falls back to reference C++ loops ("ref:any"),
      // orders of magnitude slower than converting to f32; those count as unsupported.
      if (std::strncmp(pd.impl_info_str(), "ref", 3) != 0) known = 1;
    } catch (const dnnl::error&) {
    }
  }
  return known == 1;
}

const OnednnMatmul::Entry* OnednnMatmul::prepare(const MatmulShape& shape) {
  ensure_single_threaded_openmp();
  auto it = impl_->index.find(shape);
  Entry* entry;
  if (it != impl_->index.end()) {
    impl_->lru.splice(impl_->lru.begin(), impl_->lru, it->second);
    entry = &impl_->lru.front();
  } else {
    try {
      dnnl::matmul::primitive_desc pd = make_pd(shape, impl_->engine);
      if (shape.packed) {
        // The weights were packed for m = 1; oneDNN 2.6 picks the same layout for every m
        // (checked for m = 1..2048 on the model shapes), and this keeps it so.
        TS_CHECK(pd.weights_desc() == packed_desc(shape.n, shape.k, shape.dtype, impl_->engine))
            << "oneDNN chose another packed weight layout for m = " << shape.m
            << ", n = " << shape.n << ", k = " << shape.k;
      }
      Entry e{shape,
              dnnl::matmul(pd),
              pd.scratchpad_desc().get_size(),
              pd.weights_desc().get_size(),
              {}};
      for (size_t s = 0; s < impl_->streams.size(); ++s) {
        e.slots.push_back(SlotMemory{
            memory(pd.src_desc(), impl_->engine, DNNL_MEMORY_NONE),
            memory(pd.weights_desc(), impl_->engine, DNNL_MEMORY_NONE),
            shape.bias ? memory(pd.bias_desc(), impl_->engine, DNNL_MEMORY_NONE) : memory(),
            memory(pd.dst_desc(), impl_->engine, DNNL_MEMORY_NONE),
            memory(pd.scratchpad_desc(), impl_->engine, DNNL_MEMORY_NONE)});
      }
      if (impl_->lru.size() >= kMaxPrimitives) {
        impl_->index.erase(impl_->lru.back().shape);
        impl_->lru.pop_back();
      }
      impl_->lru.push_front(std::move(e));
      impl_->index.emplace(shape, impl_->lru.begin());
      ++impl_->created;
      entry = &impl_->lru.front();
    } catch (const dnnl::error& err) {
      TS_CHECK(false) << "oneDNN matmul [" << shape.m << ", " << shape.k << "] x [" << shape.n
                      << ", " << shape.k << "] " << dtype_name(shape.dtype) << ": " << err.what();
      return nullptr;
    }
  }
  for (ScratchBuffer& s : impl_->scratchpads) s.get<char>(entry->scratchpad_bytes);
  return entry;
}

void OnednnMatmul::execute(const Entry* entry, int slot, const void* x, const void* w,
                           const float* bias, float* y) {
  ensure_single_threaded_openmp();
  const size_t s = static_cast<size_t>(slot);
  const SlotMemory& mem = entry->slots[s];
  // The scratchpad was sized by prepare(): get() does not reallocate here.
  void* scratch = impl_->scratchpads[s].get<char>(entry->scratchpad_bytes);
  dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, mem.src.get()},
                             {DNNL_ARG_WEIGHTS, mem.weights.get()},
                             {DNNL_ARG_DST, mem.dst.get()},
                             {DNNL_ARG_SCRATCHPAD, mem.scratchpad.get()},
                             {DNNL_ARG_BIAS, nullptr}};
  // The C API throughout: the C++ wrappers throw, and execute() would build a vector per call.
  bool ok = dnnl_memory_set_data_handle(args[0].memory, const_cast<void*>(x)) == dnnl_success &&
            dnnl_memory_set_data_handle(args[1].memory, const_cast<void*>(w)) == dnnl_success &&
            dnnl_memory_set_data_handle(args[2].memory, y) == dnnl_success &&
            dnnl_memory_set_data_handle(args[3].memory, scratch) == dnnl_success;
  int nargs = 4;
  if (entry->shape.bias) {
    args[nargs].memory = mem.bias.get();
    ok = ok &&
         dnnl_memory_set_data_handle(args[nargs].memory, const_cast<float*>(bias)) == dnnl_success;
    ++nargs;
  }
  TS_CHECK(ok) << "oneDNN memory handles could not be set";
  const dnnl_status_t status =
      dnnl_primitive_execute(entry->primitive.get(), impl_->streams[s].get(), nargs, args);
  TS_CHECK(status == dnnl_success) << "oneDNN matmul execution failed with status " << status;
}

size_t OnednnMatmul::weights_bytes(const Entry* entry) { return entry->weights_bytes; }

size_t OnednnMatmul::packed_bytes(int64_t n, int64_t k, DType dtype) {
  ensure_single_threaded_openmp();
  try {
    return packed_desc(n, k, dtype, impl_->engine).get_size();
  } catch (const dnnl::error& err) {
    TS_CHECK(false) << "oneDNN packed layout of [" << n << ", " << k << "] " << dtype_name(dtype)
                    << ": " << err.what();
    return 0;
  }
}

void OnednnMatmul::pack(int64_t n, int64_t k, DType dtype, const void* w, void* dst) {
  ensure_single_threaded_openmp();
  try {
    const memory::desc plain({k, n}, to_dnnl(dtype), {1, k});
    memory src(plain, impl_->engine, const_cast<void*>(w));
    memory out(packed_desc(n, k, dtype, impl_->engine), impl_->engine, dst);
    dnnl::reorder(src, out).execute(impl_->streams[0], src, out);
    impl_->streams[0].wait();
  } catch (const dnnl::error& err) {
    TS_CHECK(false) << "oneDNN packing of [" << n << ", " << k << "] " << dtype_name(dtype) << ": "
                    << err.what();
  }
}

int64_t OnednnMatmul::primitives_created() const { return impl_->created; }

}  // namespace tierserve
