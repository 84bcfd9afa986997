// moreh._C: the C++ frontend (runtime/tensor.h, runtime/models/llama.h, runtime/optim.h,
// runtime/option.h) as a Python extension. One implementation: every call goes to the C++ API
// the C++ programs use; the package around it (runtime/python/moreh) gives it PyTorch's and
// transformers' names. Long calls (loading, a step, backward, the optimizer, saving) release the
// GIL. moreh::Error becomes moreh.Error (a RuntimeError) and moreh::OutOfMemoryError
// moreh.OutOfMemoryError (a subclass), with the C++ message.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <vector>

#include "runtime/client/local_cluster.h"
#include "runtime/core/error.h"
#include "runtime/lr_schedule.h"
#include "runtime/models/llama.h"
#include "runtime/optim.h"
#include "runtime/option.h"
#include "runtime/tensor.h"

namespace py = pybind11;

namespace moreh::python {
namespace {

// A numpy array's values as a runtime tensor (copied into the runtime's own memory: the runtime
// owns every buffer through its allocator).
runtime::Tensor FromArray(const py::array& a, const char* what) {
  DType dt;
  const py::dtype t = a.dtype();
  if (t.is(py::dtype::of<float>())) {
    dt = DType::kF32;
  } else if (t.is(py::dtype::of<int64_t>())) {
    dt = DType::kI64;
  } else if (t.is(py::dtype::of<int32_t>())) {
    dt = DType::kI32;
  } else {
    throw py::type_error(fmt::format("{}: dtype {} is not supported (float32, int64 or int32)",
                                     what,
                                     py::cast<std::string>(py::str(static_cast<py::object>(t)))));
  }
  Shape shape;
  for (py::ssize_t i = 0; i < a.ndim(); ++i) shape.push_back(a.shape(i));
  const py::array c = py::array::ensure(a, py::array::c_style);
  return runtime::Tensor::FromData(c.data(), shape, dt);
}

// A view of the tensor's values as a numpy array (no copy: the array keeps the buffer alive);
// 16-bit floats, which numpy lacks, come as a float32 copy.
py::array ToArray(const Tensor& t) {
  runtime::Tensor d;
  {
    py::gil_scoped_release release;
    d = t.data().HostContiguous();
  }
  if (d.dtype() == DType::kBF16 || d.dtype() == DType::kF16) d = d.To(DType::kF32);
  std::vector<py::ssize_t> shape(d.shape().begin(), d.shape().end());
  auto* keep = new runtime::Tensor(d);
  py::capsule owner(keep, [](void* p) { delete static_cast<runtime::Tensor*>(p); });
  switch (d.dtype()) {
    case DType::kF32:
      return py::array_t<float>(shape, d.data<float>(), owner);
    case DType::kI64:
      return py::array_t<int64_t>(shape, d.data<int64_t>(), owner);
    case DType::kI32:
      return py::array_t<int32_t>(shape, d.data<int32_t>(), owner);
    default:
      throw Error(fmt::format("tensor {}: no numpy dtype", d.ToString()));
  }
}

py::tuple ShapeTuple(const Shape& s) {
  py::tuple t(s.size());
  for (size_t i = 0; i < s.size(); ++i) t[i] = s[i];
  return t;
}

}  // namespace
}  // namespace moreh::python

PYBIND11_MODULE(_C, m) {
  using namespace moreh;
  using python::FromArray;
  m.doc() = "moreh: the C++ runtime's frontend (use the `moreh` package, not this module)";

  static py::exception<Error> error(m, "Error", PyExc_RuntimeError);
  static py::exception<OutOfMemoryError> oom(m, "OutOfMemoryError", error.ptr());
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const OutOfMemoryError& e) {
      oom(e.what());
    } catch (const Error& e) {
      error(e.what());
    }
  });

  m.def("set_daemon_dir", &client::SetDefaultDaemonDir,
        "where an embedded local cluster finds moreh-scheduler and moreh-worker");

  // --- options ------------------------------------------------------------------------------
  m.def(
      "enable_advanced_parallelization",
      [](bool pipeline, int max_stages, int max_micro_batches, std::vector<int> recomputation,
         bool distribute_parameters, int max_tp) {
        option::AdvancedParallelizationOptions o;
        o.pipeline = pipeline;
        o.max_stages = max_stages;
        o.max_micro_batches = max_micro_batches;
        o.recomputation = std::move(recomputation);
        o.distribute_parameters = distribute_parameters;
        o.max_tp = max_tp;
        option::enable_advanced_parallelization(o);
      },
      py::arg("pipeline") = true, py::arg("max_stages") = 0, py::arg("max_micro_batches") = 0,
      py::arg("recomputation") = std::vector<int>{0, 1, 2}, py::arg("distribute_parameters") = true,
      py::arg("max_tp") = 0);
  m.def("disable_advanced_parallelization", &option::disable_advanced_parallelization);
  m.def("advanced_parallelization_enabled", &option::advanced_parallelization_enabled);

  // --- tensors ------------------------------------------------------------------------------
  py::class_<Tensor>(m, "Tensor")
      .def(py::init([](const py::array& a, bool requires_grad) {
             return Tensor::FromData(FromArray(a, "tensor"), requires_grad);
           }),
           py::arg("data"), py::arg("requires_grad") = false)
      .def_property_readonly("shape", [](const Tensor& t) { return python::ShapeTuple(t.shape()); })
      .def_property_readonly("dtype",
                             [](const Tensor& t) { return std::string(DTypeName(t.dtype())); })
      .def_property_readonly("requires_grad", &Tensor::requires_grad)
      .def_property_readonly("is_leaf", &Tensor::is_leaf)
      .def_property_readonly("grad",
                             [](const Tensor& t) -> py::object {
                               Tensor g = t.grad();
                               if (!g.defined()) return py::none();
                               return py::cast(g);
                             })
      .def("numel", &Tensor::numel)
      .def("dim", &Tensor::dim)
      .def("item", &Tensor::item, py::call_guard<py::gil_scoped_release>())
      .def(
          "backward",
          [](const Tensor& t, const Tensor* gradient) {
            py::gil_scoped_release release;
            t.backward(gradient ? *gradient : Tensor());
          },
          py::arg("gradient") = nullptr)
      .def("numpy", &python::ToArray)
      .def("__repr__", [](const Tensor& t) { return "moreh.Tensor(" + t.ToString() + ")"; });

  // NoGradGuard as a context manager (moreh.no_grad wraps it).
  struct NoGrad {
    std::unique_ptr<NoGradGuard> guard;
  };
  py::class_<NoGrad>(m, "_NoGrad")
      .def(py::init<>())
      .def("__enter__", [](NoGrad& g) { g.guard = std::make_unique<NoGradGuard>(); })
      .def("__exit__", [](NoGrad& g, py::args) { g.guard.reset(); });
  m.def("grad_enabled", &GradEnabled);

  // --- models -------------------------------------------------------------------------------
  py::class_<models::LlamaForCausalLM>(m, "CausalLM")
      .def_static("from_pretrained", &models::LlamaForCausalLM::from_pretrained, py::arg("path"),
                  py::arg("seed") = 0, py::call_guard<py::gil_scoped_release>())
      .def(
          "forward",
          [](const models::LlamaForCausalLM& model, const py::array& ids, const py::object& mask,
             const py::object& labels, double num_items_in_batch) {
            const Tensor t_ids = Tensor::FromData(FromArray(ids, "input_ids"));
            const Tensor t_mask =
                mask.is_none()
                    ? Tensor()
                    : Tensor::FromData(FromArray(mask.cast<py::array>(), "attention_mask"));
            const Tensor t_labels =
                labels.is_none() ? Tensor()
                                 : Tensor::FromData(FromArray(labels.cast<py::array>(), "labels"));
            models::LlamaOutput out;
            {
              py::gil_scoped_release release;
              out = model(t_ids, t_mask, t_labels, num_items_in_batch);
            }
            auto opt = [](const Tensor& t) -> py::object {
              return t.defined() ? py::cast(t) : py::none();
            };
            return py::make_tuple(opt(out.loss), opt(out.logits));
          },
          py::arg("input_ids"), py::arg("attention_mask") = py::none(),
          py::arg("labels") = py::none(), py::arg("num_items_in_batch") = 0.0)
      .def("parameters", &models::LlamaForCausalLM::parameters)
      .def("named_parameters", &models::LlamaForCausalLM::NamedParameters)
      .def("zero_grad", &models::LlamaForCausalLM::zero_grad)
      .def("save_pretrained", &models::LlamaForCausalLM::save_pretrained, py::arg("path"),
           py::arg("max_shard_bytes") = int64_t{5'000'000'000},
           py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("config_json",
                             [](const models::LlamaForCausalLM& m) { return m.config().ToJson(); })
      .def_property_readonly(
          "num_parameters",
          [](const models::LlamaForCausalLM& m) { return m.config().NumParameters(); })
      .def_property_readonly(
          "distributed", [](const models::LlamaForCausalLM& m) { return m.session() != nullptr; });

  // --- learning-rate schedules ---------------------------------------------------------------
  py::class_<optim::LrSchedule>(m, "LrSchedule")
      .def_static(
          "make",
          [](const std::string& name, double base_lr, int64_t warmup_steps, int64_t total_steps) {
            auto s = optim::LrSchedule::Make(name, base_lr, warmup_steps, total_steps);
            if (!s.ok()) throw py::value_error(s.status().message());
            return s.value();
          },
          py::arg("name"), py::arg("base_lr"), py::arg("warmup_steps"), py::arg("total_steps"))
      .def("at", &optim::LrSchedule::At, py::arg("step"))
      .def_property_readonly("name",
                             [](const optim::LrSchedule& s) { return std::string(s.name()); });
  m.def("warmup_steps", &optim::WarmupSteps, py::arg("warmup_steps"), py::arg("warmup_ratio"),
        py::arg("total_steps"));

  // --- optimizers ---------------------------------------------------------------------------
  py::class_<optim::AdamW>(m, "AdamW")
      .def(py::init([](std::vector<Tensor> params, double lr, double beta1, double beta2,
                       double eps, double weight_decay, bool exclude_bias_and_norm) {
             return std::make_unique<optim::AdamW>(
                 std::move(params),
                 optim::AdamWOptions{.lr = lr,
                                     .beta1 = beta1,
                                     .beta2 = beta2,
                                     .eps = eps,
                                     .weight_decay = weight_decay,
                                     .exclude_bias_and_norm = exclude_bias_and_norm});
           }),
           py::arg("params"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
           py::arg("weight_decay"), py::arg("exclude_bias_and_norm") = false)
      .def("step", &optim::AdamW::step, py::call_guard<py::gil_scoped_release>())
      .def("zero_grad", &optim::AdamW::zero_grad)
      .def_property("lr", &optim::AdamW::lr, &optim::AdamW::set_lr)
      .def_property_readonly("step_count", &optim::AdamW::step_count);
  m.def("clip_grad_norm", &optim::ClipGradNorm, py::arg("params"), py::arg("max_norm"),
        py::call_guard<py::gil_scoped_release>());
  m.def("excluded_from_weight_decay", &optim::ExcludedFromWeightDecay, py::arg("name"));
}
