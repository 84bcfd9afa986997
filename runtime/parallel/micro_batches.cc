#include "runtime/parallel/micro_batches.h"

#include "runtime/core/error.h"
#include "runtime/core/labels.h"

namespace moreh::parallel {

std::vector<std::vector<MicroBatch>> SplitBatch(const runtime::Tensor& ids,
                                                const runtime::Tensor& mask,
                                                const runtime::Tensor& labels, int dp, int m,
                                                double num_items) {
  MOREH_CHECK(ids.defined() && ids.dim() == 2, "batch: input_ids must be [B, T], got {}",
              ids.defined() ? ids.ToString() : "undefined");
  const int64_t B = ids.size(0), T = ids.size(1);
  MOREH_CHECK(labels.defined() && labels.shape() == ids.shape(),
              "batch: labels must be [B, T] = [{}, {}]", B, T);
  MOREH_CHECK(!mask.defined() || mask.shape() == ids.shape(),
              "batch: attention_mask must be [B, T] = [{}, {}]", B, T);
  MOREH_CHECK(dp > 0 && m > 0 && B % (int64_t{dp} * m) == 0,
              "batch of {} rows does not split into {} replicas x {} micro-batches", B, dp, m);
  const int64_t b = B / dp / m;
  const runtime::Tensor I = ids.To(DType::kI64).Contiguous();
  const runtime::Tensor L = labels.To(DType::kI64).Contiguous();
  const runtime::Tensor M = mask.defined() ? mask.To(DType::kI64).Contiguous()
                                           : runtime::Tensor::Full({B, T}, DType::kI64, 1);
  // Labels the whole batch counts (Hugging Face's shift: position 0 scores nothing).
  const int64_t total = runtime::CountLossTokens(L);
  std::vector<std::vector<MicroBatch>> out(dp);
  for (int r = 0; r < dp; ++r) {
    for (int j = 0; j < m; ++j) {
      const int64_t r0 = (int64_t{r} * m + j) * b;
      MicroBatch mb;
      mb.ids = I.Slice(0, r0, r0 + b).Clone();
      mb.mask = M.Slice(0, r0, r0 + b).Clone();
      mb.labels = L.Slice(0, r0, r0 + b).Clone();
      // The stage sums its micro-batch's token losses; 1 / 0 makes the loss NaN, as the
      // one-device mean over no labels is.
      const float w =
          static_cast<float>(1.0 / (num_items > 0 ? num_items : static_cast<double>(total)));
      mb.loss_weight = runtime::Tensor::FromData(&w, {}, DType::kF32);
      out[r].push_back(std::move(mb));
    }
  }
  return out;
}

}  // namespace moreh::parallel
