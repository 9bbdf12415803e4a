// Decode attention over inferd's dense KV rows (llm/decode_cache.py), for CPUs.
//
// One query token per sequence attends to the first lens[b] columns of its row. The work is
// reading K and V, about 1 flop per byte, so the kernel is written to stream them: each
// (sequence, KV head) task reads its K columns once (scores for every query head of the GQA
// group), then its V columns once, exponentiating each score as its V column arrives. In a
// decode step K and V come from DRAM, and the hardware prefetcher stops at every 4 KiB page:
// the kernel prefetches PREFETCH columns ahead, into V after K and into the next task's K
// after V, which made 8 layers' attention 1.3x faster (BENCHMARKS.md, issue 4, session 8).
// Softmax and the sums run in fp32 for bf16 inputs.
//
// q: [B, H, D]; k, v: [R, H_kv, C, D] with R >= B (row b holds sequence b); lens: [B] int64.
// Returns [B, H, D] in q's dtype. Built by llm/kernels.py with OpenMP for this CPU.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t PREFETCH = 16;  // columns: 4 KiB of fp32 K at head size 64

inline float to_float(float x) { return x; }

inline float to_float(at::BFloat16 x) {
  const uint32_t bits = static_cast<uint32_t>(x.x) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

template <int D, typename T>
inline void prefetch_column(const T* column) {
  for (size_t line = 0; line < D * sizeof(T); line += 64) {
    __builtin_prefetch(reinterpret_cast<const char*>(column) + line);
  }
}

template <typename T, int D>
void attend(const T* q, const T* k, const T* v, const int64_t* lens, T* out, int64_t num_seqs,
            int64_t num_heads, int64_t num_kv_heads, int64_t capacity, float scale) {
  const int64_t group = num_heads / num_kv_heads;
  at::parallel_for(0, num_seqs * num_kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> queries(group * D), sums(group * D), maxima(group), totals(group);
    std::vector<float> scores;
    float column[D];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t seq = task / num_kv_heads, kv_head = task % num_kv_heads;
      const int64_t len = lens[seq];
      const int64_t first_head = seq * num_heads + kv_head * group;
      const T* keys = k + (seq * num_kv_heads + kv_head) * capacity * D;
      const T* values = v + (seq * num_kv_heads + kv_head) * capacity * D;
      scores.resize(group * len);
      for (int64_t g = 0; g < group; ++g) {
        for (int d = 0; d < D; ++d) queries[g * D + d] = to_float(q[(first_head + g) * D + d]) * scale;
        maxima[g] = -INFINITY;
        totals[g] = 0.f;
        for (int d = 0; d < D; ++d) sums[g * D + d] = 0.f;
      }
      for (int64_t col = 0; col < len; ++col) {
        // Past the last K column, the first V columns (a prefetch never faults).
        prefetch_column<D>(col + PREFETCH < len ? keys + (col + PREFETCH) * D
                                                : values + (col + PREFETCH - len) * D);
        for (int d = 0; d < D; ++d) column[d] = to_float(keys[col * D + d]);
        for (int64_t g = 0; g < group; ++g) {
          const float* query = queries.data() + g * D;
          float score = 0.f;
#pragma omp simd reduction(+ : score)
          for (int d = 0; d < D; ++d) score += query[d] * column[d];
          scores[g * len + col] = score;
          maxima[g] = score > maxima[g] ? score : maxima[g];
        }
      }
      // Tasks are consecutive rows of [B * H_kv, C, D]: the next one's K follows this V.
      const T* next_keys = task + 1 < end ? k + (task + 1) * capacity * D : nullptr;
      for (int64_t col = 0; col < len; ++col) {
        if (col + PREFETCH < len) {
          prefetch_column<D>(values + (col + PREFETCH) * D);
        } else if (next_keys != nullptr) {
          prefetch_column<D>(next_keys + (col + PREFETCH - len) * D);
        }
        for (int d = 0; d < D; ++d) column[d] = to_float(values[col * D + d]);
        for (int64_t g = 0; g < group; ++g) {
          const float weight = std::exp(scores[g * len + col] - maxima[g]);
          totals[g] += weight;
          float* sum = sums.data() + g * D;
#pragma omp simd
          for (int d = 0; d < D; ++d) sum[d] += weight * column[d];
        }
      }
      for (int64_t g = 0; g < group; ++g) {
        const float inverse = 1.f / totals[g];
        T* o = out + (first_head + g) * D;
        for (int d = 0; d < D; ++d) o[d] = static_cast<T>(sums[g * D + d] * inverse);
      }
    }
  });
}

template <typename T>
void dispatch_head_dim(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       const torch::Tensor& lens, torch::Tensor& out, float scale) {
  const int64_t num_seqs = q.size(0), num_heads = q.size(1), head_dim = q.size(2);
  const int64_t num_kv_heads = k.size(1), capacity = k.size(2);
#define INFERD_HEAD_DIM(DIM)                                                              \
  case DIM:                                                                               \
    attend<T, DIM>(q.data_ptr<T>(), k.data_ptr<T>(), v.data_ptr<T>(), lens.data_ptr<int64_t>(), \
                   out.data_ptr<T>(), num_seqs, num_heads, num_kv_heads, capacity, scale); \
    return;
  switch (head_dim) {
    INFERD_HEAD_DIM(16)
    INFERD_HEAD_DIM(32)
    INFERD_HEAD_DIM(64)
    INFERD_HEAD_DIM(80)
    INFERD_HEAD_DIM(96)
    INFERD_HEAD_DIM(128)
    INFERD_HEAD_DIM(256)
  }
#undef INFERD_HEAD_DIM
  TORCH_CHECK(false, "decode_attention: head_dim ", head_dim, " is not compiled in");
}

}  // namespace

torch::Tensor decode_attention(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                               torch::Tensor lens, double scale) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 4 && v.sizes() == k.sizes(), "decode_attention: shapes");
  TORCH_CHECK(q.is_contiguous() && k.is_contiguous() && v.is_contiguous(),
              "decode_attention: q, k and v must be contiguous");
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "decode_attention: q, k and v must share a dtype");
  TORCH_CHECK(lens.scalar_type() == at::kLong && lens.numel() == q.size(0),
              "decode_attention: lens must be int64 [B]");
  TORCH_CHECK(k.size(0) >= q.size(0) && q.size(2) == k.size(3) && q.size(1) % k.size(1) == 0,
              "decode_attention: q [B, H, D] does not fit k [R, H_kv, C, D]");
  auto out = torch::empty_like(q);
  if (q.scalar_type() == at::kFloat) {
    dispatch_head_dim<float>(q, k, v, lens, out, static_cast<float>(scale));
  } else {
    TORCH_CHECK(q.scalar_type() == at::kBFloat16, "decode_attention: float32 or bfloat16 only");
    dispatch_head_dim<at::BFloat16>(q, k, v, lens, out, static_cast<float>(scale));
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &decode_attention, "decode attention over dense KV rows");
}
