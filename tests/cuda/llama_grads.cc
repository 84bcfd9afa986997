// The GPU half of tests/cuda/check_against_transformers_gpu.py: one forward + backward of a Llama
// checkpoint (config.json + safetensors, as transformers saves it) on cuda:0 through the runtime
// (the whole model as one stage program, f32), for token ids read from a raw int64 file; writes the
// mean loss and every parameter's gradient ("loss", "grad.<name>") to a safetensors file. With
// --cpu it runs on the CPU instead (the check's dry run, so a GPU machine finds a working script).
//   moreh_cuda_llama_grads CHECKPOINT_DIR IDS_FILE BATCH SEQ OUT.safetensors [--cpu]
// Exit status 77 where no GPU is present (without --cpu).
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "kernels/cuda/device_allocator.h"
#include "kernels/cuda/device_info.h"
#include "runtime/executor.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/parallel/stage_graph.h"

using moreh::DType;
using moreh::runtime::Tensor;

int main(int argc, char** argv) {
  const bool on_cpu = argc == 7 && std::string(argv[6]) == "--cpu";
  if (argc != 6 && !on_cpu) {
    std::fprintf(stderr, "usage: %s CHECKPOINT_DIR IDS_FILE BATCH SEQ OUT.safetensors [--cpu]\n",
                 argv[0]);
    return 2;
  }
  if (!on_cpu && moreh::kernels::cuda::DeviceCount() == 0) {
    std::printf("SKIP: no CUDA device on this machine\n");
    return 77;
  }
  try {
    const std::string dir = argv[1];
    const int64_t batch = std::stoll(argv[3]), seq = std::stoll(argv[4]);
    auto config = moreh::models::LlamaConfig::FromFile(dir + "/config.json");
    MOREH_CHECK(config.ok(), "{}", config.status().ToString());
    auto reader = moreh::io::CheckpointReader::Open(dir);
    MOREH_CHECK(reader.ok(), "{}", reader.status().ToString());
    std::vector<int64_t> ids(static_cast<size_t>(batch * seq));
    std::ifstream in(argv[2], std::ios::binary);
    MOREH_CHECK(in.read(reinterpret_cast<char*>(ids.data()), ids.size() * 8).good(),
                "{}: cannot read {} int64 token ids", argv[2], ids.size());

    moreh::parallel::StageSpec spec;
    spec.model = config.value();
    spec.num_layers = static_cast<int>(spec.model.num_hidden_layers);
    spec.micro_batch = batch;
    spec.seq_len = seq;
    const auto prog = moreh::parallel::BuildStageProgram(spec);
    const auto cg = moreh::runtime::Compile(prog.full);
    const moreh::Graph& g = cg->graph;
    moreh::runtime::Allocator* dev =
        on_cpu ? moreh::runtime::CpuAllocator() : moreh::kernels::cuda::CudaAllocator(0);
    std::vector<Tensor> inputs;
    for (int v : g.inputs()) {
      const moreh::ValueInfo& info = g.info(v);
      if (v == prog.ids || v == prog.labels) {
        inputs.push_back(Tensor::FromVector(ids, info.shape));
      } else if (v == prog.mask) {
        inputs.push_back(Tensor::Full(info.shape, DType::kI64, 1.0));
      } else if (v == prog.loss_weight) {  // transformers' mean over the shifted labels
        inputs.push_back(Tensor::Full(info.shape, DType::kF32, 1.0 / (batch * (seq - 1))));
      } else {
        auto t = reader.value().Read(g.value(v).name, dev);
        MOREH_CHECK(t.ok(), "{}", t.status().ToString());
        inputs.push_back(t.value().To(DType::kF32));
      }
    }
    moreh::runtime::Executor exec(dev);
    const std::vector<Tensor> outs = exec.Run(*cg, inputs);
    std::vector<std::pair<std::string, Tensor>> result;
    for (size_t k = 0; k < g.outputs().size(); ++k) {
      const int v = g.outputs()[k];
      if (v == prog.out) result.emplace_back("loss", outs[k]);
      for (size_t j = 0; j < prog.param_grads.size(); ++j) {
        if (prog.param_grads[j] == v) result.emplace_back("grad." + prog.params[j], outs[k]);
      }
    }
    MOREH_CHECK(result.size() == 1 + prog.params.size(),
                "the step gave {} of the loss and {} parameter gradients", result.size(),
                prog.params.size());
    const auto s = moreh::io::WriteSafetensors(argv[5], result, {});
    MOREH_CHECK(s.ok(), "{}", s.ToString());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moreh_cuda_llama_grads: %s\n", e.what());
    return 1;
  }
  return 0;
}
