// spotrun's C++ shim: the few ATen entry points that tch 0.24's generated API lacks.
//
// Every function catches C++ exceptions and returns them as a heap string (NULL on success) that the Rust side
// frees with spotrun_free_error. Tensor arguments are tch's `torch::Tensor*` handles.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <torch/script.h>
#include <cstring>
#include <exception>
#include <unordered_map>
#include <vector>

namespace {
char* dup_error(const char* msg) { return strdup(msg); }

std::vector<at::Tensor> gather(at::Tensor** ts, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*ts[i]);
  return out;
}

at::DeviceType device_type(int cuda) { return cuda ? at::kCUDA : at::kCPU; }
}  // namespace

#define SHIM_PROTECT(...)                      \
  try {                                        \
    __VA_ARGS__ return nullptr;                \
  } catch (const std::exception& e) {          \
    return dup_error(e.what());                \
  } catch (...) {                              \
    return dup_error("unknown C++ exception"); \
  }

extern "C" {

void spotrun_free_error(char* err) { free(err); }

// Enters an autocast region on CPU (cuda = 0) or CUDA (cuda = 1) with bf16 (half = 0) or fp16 (half = 1).
char* spotrun_autocast_enter(int cuda, int half) {
  SHIM_PROTECT({
    at::DeviceType dt = device_type(cuda);
    at::autocast::set_autocast_dtype(dt, half ? at::kHalf : at::kBFloat16);
    at::autocast::set_autocast_enabled(dt, true);
    at::autocast::increment_nesting();
  })
}

// Leaves the region entered by spotrun_autocast_enter; clears the cast cache when the outermost region ends.
char* spotrun_autocast_exit(int cuda) {
  SHIM_PROTECT({
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(device_type(cuda), false);
  })
}

// torch.optim.AdamW(fused=True)'s kernel. `steps` must already be incremented, as torch.optim does.
// `found_inf` may be NULL; when given and non-zero the kernel leaves every tensor unchanged.
char* spotrun_fused_adamw(at::Tensor** params, at::Tensor** grads, at::Tensor** exp_avgs, at::Tensor** exp_avg_sqs,
                          at::Tensor** steps, size_t n, double lr, double beta1, double beta2, double weight_decay,
                          double eps, at::Tensor* found_inf) {
  SHIM_PROTECT({
    auto p = gather(params, n);
    auto g = gather(grads, n);
    auto m = gather(exp_avgs, n);
    auto v = gather(exp_avg_sqs, n);
    auto s = gather(steps, n);
    std::optional<at::Tensor> inf;
    if (found_inf != nullptr) inf = *found_inf;
    at::_fused_adamw_(p, g, m, v, {}, s, lr, beta1, beta2, weight_decay, eps, /*amsgrad=*/false,
                      /*maximize=*/false, /*grad_scale=*/std::nullopt, inf);
  })
}

// GradScaler.unscale_: grads *= inv_scale in place; found_inf is set to 1 if any grad has an inf or NaN.
char* spotrun_unscale_check(at::Tensor** grads, size_t n, at::Tensor* found_inf, at::Tensor* inv_scale) {
  SHIM_PROTECT({
    auto g = gather(grads, n);
    at::_amp_foreach_non_finite_check_and_unscale_(g, *found_inf, *inv_scale);
  })
}

// optimizer.zero_grad(set_to_none=True): drops each tensor's .grad so backward writes fresh gradients
// instead of accumulating into zeroed buffers.
char* spotrun_grads_to_none(at::Tensor** ts, size_t n) {
  SHIM_PROTECT({
    for (size_t i = 0; i < n; ++i) ts[i]->mutable_grad().reset();
  })
}

// torch.use_deterministic_algorithms(on) plus cudnn.deterministic = on, cudnn.benchmark = false.
char* spotrun_set_deterministic(int on) {
  SHIM_PROTECT({
    at::globalContext().setDeterministicAlgorithms(on != 0, /*warn_only=*/false);
    at::globalContext().setDeterministicCuDNN(on != 0);
    at::globalContext().setBenchmarkCuDNN(false);
  })
}

// Whether torch.use_deterministic_algorithms is on (so a per-run setting can be restored afterwards).
int spotrun_deterministic() { return at::globalContext().deterministicAlgorithms() ? 1 : 0; }

// Re-lays a parameter out channels-last (NHWC strides), as `module.to(memory_format=torch.channels_last)` does:
// the tensor keeps its identity (autograd leaf, aliases held by tch's VarStore), only its data is replaced.
char* spotrun_channels_last(at::Tensor* t) {
  SHIM_PROTECT({
    at::NoGradGuard no_grad;
    // A fresh tensor with channels-last strides, not `contiguous(ChannelsLast)`: that returns a weight with one
    // input channel ([out, 1, kh, kw]) unchanged, since its standard strides also count as channels-last, and
    // convolutions then see it as NCHW and reorder the activations at every layer boundary.
    at::Tensor nhwc = at::empty_like(*t, at::MemoryFormat::ChannelsLast);
    nhwc.copy_(*t);
    t->set_data(nhwc);
  })
}

// A TorchScript module loaded by the shim (tch's CModule hides its module and exposes no buffers).
struct spotrun_module {
  torch::jit::Module m;
};

// torch::jit::load(path) onto `cuda_index` (-1 = CPU). *out is freed with spotrun_module_free.
char* spotrun_module_load(const char* path, int cuda_index, spotrun_module** out) {
  SHIM_PROTECT({
    c10::Device dev = cuda_index < 0 ? c10::Device(c10::kCPU) : c10::Device(c10::kCUDA, cuda_index);
    *out = new spotrun_module{torch::jit::load(path, dev)};
  })
}

void spotrun_module_free(spotrun_module* m) { delete m; }

// Calls `each(ctx, name, tensor, alias_of)` for every parameter (buffers = 0) or buffer (buffers = 1), recursively,
// with `state_dict` names. `tensor` is a new handle the callee owns. A tensor already listed under another name
// (tied weights) is reported with `alias_of` = that first name, else NULL.
char* spotrun_module_named(spotrun_module* m, int buffers, void* ctx,
                           void (*each)(void*, const char*, at::Tensor*, const char*)) {
  SHIM_PROTECT({
    std::unordered_map<c10::TensorImpl*, std::string> seen;
    auto visit = [&](const std::string& name, const at::Tensor& t) {
      auto found = seen.find(t.unsafeGetTensorImpl());
      if (found != seen.end()) {
        each(ctx, name.c_str(), new at::Tensor(t), found->second.c_str());
        return;
      }
      seen.emplace(t.unsafeGetTensorImpl(), name);
      each(ctx, name.c_str(), new at::Tensor(t), nullptr);
    };
    if (buffers) {
      for (const auto& b : m->m.named_buffers(true)) visit(b.name, b.value);
    } else {
      for (const auto& p : m->m.named_parameters(true)) visit(p.name, p.value);
    }
  })
}

// module.train(on) / module.eval(), recursively.
char* spotrun_module_train(spotrun_module* m, int on) {
  SHIM_PROTECT({ m->m.train(on != 0); })
}

// module.forward(x); the result must be one tensor. *out is a new handle.
char* spotrun_module_forward(spotrun_module* m, at::Tensor* x, at::Tensor** out) {
  SHIM_PROTECT({
    c10::IValue r = m->m.forward({*x});
    if (!r.isTensor()) throw std::runtime_error("forward returned " + r.tagKind() + ", not one tensor");
    *out = new at::Tensor(r.toTensor());
  })
}

// module.save(path) (the trained module, loadable with torch.jit.load).
char* spotrun_module_save(spotrun_module* m, const char* path) {
  SHIM_PROTECT({ m->m.save(path); })
}

// The CUDA runtime version the loaded libtorch_cuda was built with (CUDART_VERSION, e.g. 13000 for 13.0), as
// torch.version.cuda says; -1 when no CUDA hooks are registered (a CPU-only libtorch). Needs no GPU and no driver.
long spotrun_torch_cuda_version() {
  try {
    const auto& hooks = at::detail::getCUDAHooks();
    return hooks.hasCUDART() ? hooks.versionCUDART() : -1;
  } catch (...) {
    return -1;
  }
}

// What the CUDA caching allocator of this process holds on `device`: bytes reserved from the driver (in use or
// cached) and bytes in live tensors (torch.cuda.memory_reserved / memory_allocated). Both 0 before the allocator is
// initialised (nothing allocated yet). Touches no GPU memory and does not initialise CUDA.
char* spotrun_cuda_allocator_bytes(int device, int64_t* reserved, int64_t* allocated) {
  SHIM_PROTECT({
    *reserved = 0;
    *allocated = 0;
    c10::DeviceAllocator* a = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    if (a->initialized()) {
      const auto stats = a->getDeviceStats(static_cast<c10::DeviceIndex>(device));
      const auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
      *reserved = stats.reserved_bytes[all].current;
      *allocated = stats.allocated_bytes[all].current;
    }
  })
}

}  // extern "C"
