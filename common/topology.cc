#include "common/topology.h"

#include <hwloc.h>

#include <algorithm>

#include "common/check.h"

namespace tierserve {

struct Topology::Impl {
  hwloc_topology_t topo = nullptr;
};

Topology::Topology() : impl_(std::make_unique<Impl>()) {
  TS_CHECK(hwloc_topology_init(&impl_->topo) == 0) << "hwloc_topology_init failed";
  TS_CHECK(hwloc_topology_load(impl_->topo) == 0) << "hwloc_topology_load failed";
}

Topology::~Topology() { hwloc_topology_destroy(impl_->topo); }

int Topology::num_cores() const {
  int n = hwloc_get_nbobjs_by_type(impl_->topo, HWLOC_OBJ_CORE);
  if (n <= 0) n = hwloc_get_nbobjs_by_type(impl_->topo, HWLOC_OBJ_PU);
  return std::max(n, 1);
}

int Topology::num_numa_nodes() const {
  return std::max(hwloc_get_nbobjs_by_type(impl_->topo, HWLOC_OBJ_NUMANODE), 1);
}

bool Topology::bind_current_thread_to_core(int core) const {
  hwloc_obj_type_t type = HWLOC_OBJ_CORE;
  int n = hwloc_get_nbobjs_by_type(impl_->topo, type);
  if (n <= 0) {
    type = HWLOC_OBJ_PU;
    n = hwloc_get_nbobjs_by_type(impl_->topo, type);
  }
  if (n <= 0) return false;
  hwloc_obj_t obj = hwloc_get_obj_by_type(impl_->topo, type, static_cast<unsigned>(core % n));
  if (obj == nullptr || obj->cpuset == nullptr) return false;
  hwloc_cpuset_t set = hwloc_bitmap_dup(obj->cpuset);
  hwloc_bitmap_singlify(set);
  int rc = hwloc_set_cpubind(impl_->topo, set, HWLOC_CPUBIND_THREAD);
  hwloc_bitmap_free(set);
  return rc == 0;
}

bool Topology::bind_memory_near_core(void* addr, size_t bytes, int core) const {
  int n = hwloc_get_nbobjs_by_type(impl_->topo, HWLOC_OBJ_CORE);
  hwloc_obj_type_t type = HWLOC_OBJ_CORE;
  if (n <= 0) {
    type = HWLOC_OBJ_PU;
    n = hwloc_get_nbobjs_by_type(impl_->topo, type);
  }
  if (n <= 0 || bytes == 0) return false;
  hwloc_obj_t obj = hwloc_get_obj_by_type(impl_->topo, type, static_cast<unsigned>(core % n));
  if (obj == nullptr || obj->nodeset == nullptr) return false;
  return hwloc_set_area_membind(impl_->topo, addr, bytes, obj->nodeset, HWLOC_MEMBIND_BIND,
                                HWLOC_MEMBIND_BYNODESET) == 0;
}

bool Topology::bind_memory_to_numa_node(void* addr, size_t bytes, int os_index) const {
  if (os_index < 0 || bytes == 0) return false;
  hwloc_obj_t node =
      hwloc_get_numanode_obj_by_os_index(impl_->topo, static_cast<unsigned>(os_index));
  if (node == nullptr || node->nodeset == nullptr) return false;
  return hwloc_set_area_membind(impl_->topo, addr, bytes, node->nodeset, HWLOC_MEMBIND_BIND,
                                HWLOC_MEMBIND_BYNODESET) == 0;
}

}  // namespace tierserve
