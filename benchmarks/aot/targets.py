"""The machines the loss is compiled for without one: TPU topologies (libtpu) and NVIDIA
GPUs (the CUDA plugin, given a ``GpuTargetConfigProto`` in text form).

A GPU description holds what XLA:GPU's compiler reads of a device: compute capability,
core and thread limits, memory size and bandwidth, L2 size, clock. The numbers are the
cards' published specifications (SXM H100 80 GB and H200 141 GB: 132 SMs, compute
capability 9.0, 50 MiB L2).
"""

import dataclasses

_GPU_CONFIG = """
gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_block_optin: 232448
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: {cores}
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {bandwidth}
  l2_cache_size: {l2}
  clock_rate_ghz: {clock}
  device_memory_size: {memory}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
  cuda_compute_capability {{ major: {major} minor: {minor} }}
}}
platform_name: "CUDA"
device_description_str: "{name}"
"""


@dataclasses.dataclass(frozen=True)
class Target:
    description: str
    platform: str  # "tpu" or "cuda"
    topology: str
    gpu: dict = None

    def devices(self):
        from jax.experimental import topologies

        if self.platform == "tpu":
            topology = topologies.get_topology_desc(topology_name=self.topology,
                                                    platform="tpu")
        else:
            topology = topologies.get_topology_desc(
                platform="cuda", topology=self.topology,
                target_config=_GPU_CONFIG.format(**self.gpu))
        return list(topology.devices)


def _hopper(name, memory_bytes, bandwidth):
    return dict(name=name, cores=132, bandwidth=bandwidth, l2=50 * 2**20, clock=1.98,
                memory=memory_bytes, major=9, minor=0)


TARGETS = {
    "v5e": Target("TPU v5e, topology v5e:2x4", "tpu", "v5e:2x4"),
    "v6e": Target("TPU v6e, topology v6e:2x4", "tpu", "v6e:2x4"),
    "v5p": Target("TPU v5p, topology v5p:2x2x2", "tpu", "v5p:2x2x2"),
    "v4": Target("TPU v4, topology v4:2x2x1", "tpu", "v4:2x2x1"),
    "h100": Target("NVIDIA H100 SXM 80 GB, 8 GPUs", "cuda", "1x1x8",
                   _hopper("NVIDIA H100 80GB HBM3", 80 * 10**9, 3_350 * 10**9)),
    "h200": Target("NVIDIA H200 141 GB, 8 GPUs", "cuda", "1x1x8",
                   _hopper("NVIDIA H200 141GB HBM3e", 141 * 10**9, 4_800 * 10**9)),
}
