"""The built-in kernel library: data only, one TOML file a kernel (installed as convfilter.builtin_kernels)."""
