// Decode attention over inferd's dense KV rows (llm/decode_cache.py), for CPUs.
//
// One query token per sequence attends to the first lens[r] columns of its row, the last of
// which is its own: the kernel first writes the token's new K and V there. The work is
// reading K and V, about 1 flop per byte, so the kernel is written to stream them: each
// (row, KV head) task reads its K columns once (scores for every query head of the GQA
// group), then its V columns once, exponentiating each score as its V column arrives. In a
// decode step K and V come from DRAM, and the hardware prefetcher stops at every 4 KiB page:
// the kernel prefetches PREFETCH columns ahead, into V after K and into the next task's K
// after V, which made 8 layers' attention 1.3x faster (BENCHMARKS.md, issue 4, session 8).
// Softmax and the sums run in fp32 for bf16 inputs.
//
// Sequences come in the step's order (q, k_new, v_new: [B, H or H_kv, D], each sequence's
// heads contiguous, sequences at any stride); rows in the cache's: order[r] is the sequence
// that row r of k, v ([R, H_kv, C, D], R >= B) holds, and lens[r] its context with the new
// token. Writing the new K/V and reading q and writing out through order here replaces two
// appends and two permutations per layer in torch. Returns [B, H, D], step order, q's dtype.
// Built by llm/kernels.py with OpenMP for this CPU.

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

struct Step {
  const void* q;
  const void* k_new;
  const void* v_new;
  void* k;
  void* v;
  const int64_t* lens;
  const int64_t* order;
  void* out;
  int64_t num_seqs, num_heads, num_kv_heads, capacity;
  int64_t q_stride, k_new_stride, v_new_stride;  // elements between sequences
  float scale;
};

template <typename T, int D>
void attend(const Step& step) {
  const T* q = static_cast<const T*>(step.q);
  const T* k_new = static_cast<const T*>(step.k_new);
  const T* v_new = static_cast<const T*>(step.v_new);
  T* k = static_cast<T*>(step.k);
  T* v = static_cast<T*>(step.v);
  T* out = static_cast<T*>(step.out);
  const int64_t num_heads = step.num_heads, num_kv_heads = step.num_kv_heads;
  const int64_t capacity = step.capacity, group = num_heads / num_kv_heads;
  at::parallel_for(0, step.num_seqs * num_kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> queries(group * D), sums(group * D), maxima(group), totals(group);
    std::vector<float> scores;
    float column[D];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / num_kv_heads, kv_head = task % num_kv_heads;
      const int64_t seq = step.order[row], len = step.lens[row];
      T* keys = k + task * capacity * D;  // task = row * H_kv + kv_head
      T* values = v + task * capacity * D;
      std::memcpy(keys + (len - 1) * D, k_new + seq * step.k_new_stride + kv_head * D,
                  D * sizeof(T));
      std::memcpy(values + (len - 1) * D, v_new + seq * step.v_new_stride + kv_head * D,
                  D * sizeof(T));
      const T* query_heads = q + seq * step.q_stride + kv_head * group * D;
      T* out_heads = out + (seq * num_heads + kv_head * group) * D;
      scores.resize(group * len);
      for (int64_t g = 0; g < group; ++g) {
        for (int d = 0; d < D; ++d) queries[g * D + d] = to_float(query_heads[g * D + d]) * step.scale;
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
      // The next task's K follows this V in the cache.
      const T* next_keys = task + 1 < end ? keys + capacity * D : nullptr;
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
        for (int d = 0; d < D; ++d) out_heads[g * D + d] = static_cast<T>(sums[g * D + d] * inverse);
      }
    }
  });
}

template <typename T>
void dispatch_head_dim(const Step& step, int64_t head_dim) {
#define INFERD_HEAD_DIM(DIM) \
  case DIM:                  \
    attend<T, DIM>(step);    \
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

// Each sequence's [heads, D] must be contiguous; the sequences may be strided (views of a
// fused QKV projection are).
void check_heads(const torch::Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() == 3 && x.stride(2) == 1 && x.stride(1) == x.size(2),
              "decode_attention: ", name, " must be [B, heads, D] with each row's heads contiguous");
}

}  // namespace

torch::Tensor decode_attention(torch::Tensor q, torch::Tensor k_new, torch::Tensor v_new,
                               torch::Tensor k, torch::Tensor v, torch::Tensor lens,
                               torch::Tensor order, double scale) {
  check_heads(q, "q");
  check_heads(k_new, "k_new");
  check_heads(v_new, "v_new");
  TORCH_CHECK(k.dim() == 4 && v.sizes() == k.sizes() && k.is_contiguous() && v.is_contiguous(),
              "decode_attention: k and v must be contiguous [R, H_kv, C, D] of one shape");
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type() &&
                  k_new.scalar_type() == q.scalar_type() && v_new.scalar_type() == q.scalar_type(),
              "decode_attention: q, k and v must share a dtype");
  const int64_t num_seqs = q.size(0), head_dim = q.size(2), num_kv_heads = k.size(1);
  TORCH_CHECK(k.size(0) >= num_seqs && k.size(3) == head_dim && q.size(1) % num_kv_heads == 0,
              "decode_attention: q [B, H, D] does not fit k [R, H_kv, C, D]");
  TORCH_CHECK(k_new.size(0) == num_seqs && v_new.size(0) == num_seqs &&
                  k_new.size(1) == num_kv_heads && v_new.size(1) == num_kv_heads &&
                  k_new.size(2) == head_dim && v_new.size(2) == head_dim,
              "decode_attention: k_new and v_new must be [B, H_kv, D]");
  TORCH_CHECK(lens.scalar_type() == at::kLong && lens.numel() == num_seqs && lens.is_contiguous(),
              "decode_attention: lens must be int64 [B]");
  TORCH_CHECK(order.scalar_type() == at::kLong && order.numel() == num_seqs &&
                  order.is_contiguous(),
              "decode_attention: order must be int64 [B]");
  // A bad length or row would write outside the cache: checked here, once per layer (B values).
  const int64_t* lens_data = lens.data_ptr<int64_t>();
  const int64_t* order_data = order.data_ptr<int64_t>();
  for (int64_t row = 0; row < num_seqs; ++row) {
    TORCH_CHECK(lens_data[row] >= 1 && lens_data[row] <= k.size(2),
                "decode_attention: lens[", row, "] = ", lens_data[row], " is outside [1, ",
                k.size(2), "]");
    TORCH_CHECK(order_data[row] >= 0 && order_data[row] < num_seqs,
                "decode_attention: order[", row, "] = ", order_data[row], " is outside [0, ",
                num_seqs, ")");
  }
  auto out = torch::empty({num_seqs, q.size(1), head_dim}, q.options());
  Step step{q.data_ptr(),    k_new.data_ptr(), v_new.data_ptr(),  k.data_ptr(),
            v.data_ptr(),    lens_data,        order_data,        out.data_ptr(),
            num_seqs,        q.size(1),        num_kv_heads,      k.size(2),
            q.stride(0),     k_new.stride(0),  v_new.stride(0),   static_cast<float>(scale)};
  if (q.scalar_type() == at::kFloat) {
    dispatch_head_dim<float>(step, head_dim);
  } else {
    TORCH_CHECK(q.scalar_type() == at::kBFloat16, "decode_attention: float32 or bfloat16 only");
    dispatch_head_dim<at::BFloat16>(step, head_dim);
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &decode_attention,
        "append the step's K/V to the dense rows and attend them");
}
