// Calls spattn's direct C API (spattn/c_api.h, libspattn_kernels.so) from a program built with
// find_package(spattn): dense attention checked against a plain softmax(QK^T/sqrt(D))V written
// here, then a sliding window, then a bad call whose error message says what is wrong.
#include <spattn/c_api.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace {

spattn_args make_args(const std::vector<float>& q, const std::vector<float>& k,
                      const std::vector<float>& v, std::vector<float>* o, int batch, int heads,
                      int len, int dim) {
  spattn_args a{};
  a.q = q.data();
  a.k = k.data();
  a.v = v.data();
  a.o = o->data();
  a.dtype = 0;  // float32
  a.batch = batch;
  a.heads_q = a.heads_kv = heads;
  a.len_q = a.len_k = len;
  a.head_dim = a.head_dim_v = dim;
  a.window_left = a.window_right = -1;  // dense
  a.block_size = 64;
  a.num_threads = 0;
  return a;
}

// softmax(q k^T / sqrt(D)) v for one [len, dim] head: the textbook formula, no pattern.
void dense_head(const float* q, const float* k, const float* v, float* o, int len, int dim) {
  const float scale = 1.0f / std::sqrt(float(dim));
  std::vector<double> s(len);
  for (int i = 0; i < len; ++i) {
    double m = -1e300, sum = 0;
    for (int j = 0; j < len; ++j) {
      double d = 0;
      for (int c = 0; c < dim; ++c) d += double(q[i * dim + c]) * k[j * dim + c];
      s[j] = d * scale;
      m = s[j] > m ? s[j] : m;
    }
    for (int j = 0; j < len; ++j) sum += (s[j] = std::exp(s[j] - m));
    for (int c = 0; c < dim; ++c) {
      double acc = 0;
      for (int j = 0; j < len; ++j) acc += s[j] * v[j * dim + c];
      o[i * dim + c] = float(acc / sum);
    }
  }
}

}  // namespace

int main() {
  std::printf("spattn %s, CUDA kernels: %s\n", spattn_version(), spattn_has_cuda() ? "yes" : "no");
  std::printf("ONNX Runtime custom-op library: %s\n",
              SPATTN_ORT_LIBRARY[0] ? SPATTN_ORT_LIBRARY : "(not built)");
  const int batch = 1, heads = 2, len = 256, dim = 64;
  const size_t n = size_t(batch) * heads * len * dim;
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  std::vector<float> q(n), k(n), v(n), o(n), ref(n);
  for (size_t i = 0; i < n; ++i) q[i] = normal(rng), k[i] = normal(rng), v[i] = normal(rng);

  char err[512];
  spattn_args a = make_args(q, k, v, &o, batch, heads, len, dim);
  if (spattn_cpu_forward(&a, err, sizeof err) != 0) {
    std::fprintf(stderr, "error: %s\n", err);
    return 1;
  }
  double worst = 0;
  for (int h = 0; h < batch * heads; ++h) {
    const size_t off = size_t(h) * len * dim;
    dense_head(&q[off], &k[off], &v[off], &ref[off], len, dim);
  }
  for (size_t i = 0; i < n; ++i) worst = std::fmax(worst, std::fabs(double(o[i]) - ref[i]));
  std::printf("dense: max |spattn - softmax(QK^T/sqrt(D))V| = %.3g\n", worst);
  if (worst > 1e-4) {
    std::fprintf(stderr, "error: dense attention differs from the textbook formula\n");
    return 1;
  }

  a.window_left = a.window_right = 16;  // each query sees its 16 neighbours on each side
  if (spattn_cpu_forward(&a, err, sizeof err) != 0) {
    std::fprintf(stderr, "error: %s\n", err);
    return 1;
  }
  double checksum = 0;
  for (float x : o) checksum += x;
  std::printf("sliding window 16|16: output [%d, %d, %d, %d], checksum %.6f\n", batch, heads, len,
              dim, checksum);

  a.head_dim = a.head_dim_v = 0;  // a bad call: the library says what it expected
  if (spattn_cpu_forward(&a, err, sizeof err) == 0) {
    std::fprintf(stderr, "error: a head dim of 0 was accepted\n");
    return 1;
  }
  std::printf("bad call rejected: %s\n", err);
  return 0;
}
