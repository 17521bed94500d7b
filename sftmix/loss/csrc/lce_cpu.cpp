// The fused CPU body of one logits chunk of sftmix.loss.kernel: NTP rows and Mixup pairs, loss and gradient in one
// call, in place over the chunk's logits (built on first use by sftmix/loss/fused.py).
//
// x [c, V] (fp32 or fp64, contiguous) holds a chunk's raw logits l; T(l) = scale * l is the model's logit transform
// (a soft-cap is not handled here). Rows 2i and 2i+1 (i < P) form Mixup slot i, whose mixed logits are
// m_i = lam_i T(l_2i) + (1 - lam_i) T(l_2i+1) (the head is linear). Returned, per row r (when `rows`):
//   tok[r] = lse(T(l_r)) - (c_r T(l_r)[y_r] + (1 - c_r) T(l_r)[yb_r])            (no yb: c_r = 1)
// and per slot i:
//   nll_m[i] = lse(m_i) - (lam_i m_i[y_2i] + (1 - lam_i) m_i[y_2i+1]).
// With `grad`, x is overwritten by the gradient wrt the raw logits of sum_r tok[r] + sum_i k_i nll_m[i], the slot
// term's weight split as ka_i (into row 2i) and kb_i (into row 2i+1), each already carrying its lam_i or 1 - lam_i:
//   row r:   scale * ([rows] (softmax(T(l_r)) - targets_r) + k (softmax(m_i) - lam_i e(y_2i) - (1 - lam_i) e(y_2i+1)))
// with k = ka_i for r = 2i, kb_i for r = 2i+1, 0 for rows in no slot.
//
// Each row is read three times (max; exp, store and sum; scale), one row (or pair) at a time, so it stays in L2;
// a pair computes its rows' and its mixed exponentials in the same loop, which is the whole saving over computing
// the mixed logits, their log-softmax and the two scaled adds as separate full passes.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

using at::vec::Vectorized;

// exp as ATen's own CPU softmax computes it for fp32 (exp_u20); Sleef's u10 for fp64.
template <typename T>
inline Vectorized<T> vexp(const Vectorized<T>& v) {
  return v.exp();
}
template <>
inline Vectorized<float> vexp(const Vectorized<float>& v) {
  return v.exp_u20();
}

template <typename T>
inline T hsum(const Vectorized<T>& v) {
  __at_align__ T buf[Vectorized<T>::size()];
  v.store(buf);
  T s = 0;
  for (int k = 0; k < Vectorized<T>::size(); ++k) s += buf[k];
  return s;
}

template <typename T>
inline T hmax(const Vectorized<T>& v) {
  __at_align__ T buf[Vectorized<T>::size()];
  v.store(buf);
  T m = buf[0];
  for (int k = 1; k < Vectorized<T>::size(); ++k) m = std::max(m, buf[k]);
  return m;
}

template <typename T>
struct Args {
  T* x;
  const int64_t* y;
  const int64_t* yb;  // nullable
  const T* coef;      // nullable (with yb)
  const T* lam;
  const T* ka;
  const T* kb;
  T* tok;
  T* nll_m;
  int64_t V;
  T scale;
  bool rows, grad;
};

// Subtract the row's own targets (scaled by s) from its gradient row g.
template <typename T>
inline void row_targets_(const Args<T>& a, int64_t r, T* g, T s) {
  if (a.yb) {
    g[a.y[r]] -= s * a.coef[r];
    g[a.yb[r]] -= s * (T(1) - a.coef[r]);
  } else {
    g[a.y[r]] -= s;
  }
}

template <typename T>
inline T row_target_logit(const Args<T>& a, int64_t r, const T* x) {
  T t = a.scale * x[a.y[r]];
  return a.yb ? a.coef[r] * t + (T(1) - a.coef[r]) * a.scale * x[a.yb[r]] : t;
}

// A row that is in no pair: softmax in place (three passes over the row), then its targets.
template <typename T>
void plain_row(const Args<T>& a, int64_t r) {
  using V = Vectorized<T>;
  const int64_t W = V::size(), n = a.V;
  T* x = a.x + r * n;
  const T target = row_target_logit(a, r, x);
  const V vs(a.scale);
  int64_t j = 0;
  T mx = -std::numeric_limits<T>::infinity();
  if (n >= W) {
    V vm = V::loadu(x) * vs;
    for (j = W; j + W <= n; j += W) vm = at::vec::maximum(vm, V::loadu(x + j) * vs);
    mx = hmax(vm);
  }
  for (; j < n; ++j) mx = std::max(mx, a.scale * x[j]);
  const V vmx(mx);
  V acc(0);
  for (j = 0; j + W <= n; j += W) {
    V e = vexp(at::vec::fmsub(V::loadu(x + j), vs, vmx));
    if (a.grad) e.store(x + j);
    acc = acc + e;
  }
  T sum = hsum(acc);
  for (; j < n; ++j) {
    T e = std::exp(a.scale * x[j] - mx);
    if (a.grad) x[j] = e;
    sum += e;
  }
  const T lse = mx + std::log(sum);
  a.tok[r] = lse - target;
  if (!a.grad) return;
  const T k = a.scale / sum;
  const V vk(k);
  for (j = 0; j + W <= n; j += W) (V::loadu(x + j) * vk).store(x + j);
  for (; j < n; ++j) x[j] *= k;
  row_targets_(a, r, x, a.scale);
}

// Mixup pair i (rows 2i, 2i+1) with their own row terms when a.rows; em is a scratch row of V.
template <typename T>
void pair(const Args<T>& a, int64_t i, T* em) {
  using V = Vectorized<T>;
  const int64_t W = V::size(), n = a.V, ra = 2 * i, rb = 2 * i + 1;
  T* xa = a.x + ra * n;
  T* xb = a.x + rb * n;
  const T lam = a.lam[i], ml = T(1) - lam, s = a.scale;
  const T ls = lam * s, mls = ml * s;  // m = ls * l_a + mls * l_b
  const int64_t ya = a.y[ra], yb = a.y[rb];
  const T tgt_m = lam * (ls * xa[ya] + mls * xb[ya]) + ml * (ls * xa[yb] + mls * xb[yb]);
  T tgt_a = 0, tgt_b = 0;
  if (a.rows) {
    tgt_a = row_target_logit(a, ra, xa);
    tgt_b = row_target_logit(a, rb, xb);
  }
  const V vs(s), vls(ls), vmls(mls);
  // pass 1: the maxima of T(l_a), T(l_b) and m
  T ma = -std::numeric_limits<T>::infinity(), mb = ma, mm = ma;
  int64_t j = 0;
  if (n >= W) {
    V va = V::loadu(xa), vb = V::loadu(xb);
    V am = va, bm = vb, mmv = at::vec::fmadd(vls, va, vmls * vb);
    for (j = W; j + W <= n; j += W) {
      va = V::loadu(xa + j);
      vb = V::loadu(xb + j);
      am = at::vec::maximum(am, va);
      bm = at::vec::maximum(bm, vb);
      mmv = at::vec::maximum(mmv, at::vec::fmadd(vls, va, vmls * vb));
    }
    // scale > 0, so max(s * l) = s * max(l)
    ma = s * hmax(am);
    mb = s * hmax(bm);
    mm = hmax(mmv);
  }
  for (; j < n; ++j) {
    ma = std::max(ma, s * xa[j]);
    mb = std::max(mb, s * xb[j]);
    mm = std::max(mm, ls * xa[j] + mls * xb[j]);
  }
  // pass 2: exponentials (stored for the gradient) and their sums
  const V vma(ma), vmb(mb), vmm(mm);
  V acc_a(0), acc_b(0), acc_m(0);
  for (j = 0; j + W <= n; j += W) {
    const V va = V::loadu(xa + j), vb = V::loadu(xb + j);
    const V e_m = vexp(at::vec::fmadd(vls, va, vmls * vb) - vmm);
    acc_m = acc_m + e_m;
    if (a.grad) e_m.store(em + j);
    if (a.rows) {
      const V e_a = vexp(at::vec::fmsub(va, vs, vma)), e_b = vexp(at::vec::fmsub(vb, vs, vmb));
      acc_a = acc_a + e_a;
      acc_b = acc_b + e_b;
      if (a.grad) {
        e_a.store(xa + j);
        e_b.store(xb + j);
      }
    }
  }
  T sa = hsum(acc_a), sb = hsum(acc_b), sm = hsum(acc_m);
  for (; j < n; ++j) {
    const T e_m = std::exp(ls * xa[j] + mls * xb[j] - mm);
    sm += e_m;
    if (a.grad) em[j] = e_m;
    if (a.rows) {
      const T e_a = std::exp(s * xa[j] - ma), e_b = std::exp(s * xb[j] - mb);
      sa += e_a;
      sb += e_b;
      if (a.grad) {
        xa[j] = e_a;
        xb[j] = e_b;
      }
    }
  }
  a.nll_m[i] = mm + std::log(sm) - tgt_m;
  if (a.rows) {
    a.tok[ra] = ma + std::log(sa) - tgt_a;
    a.tok[rb] = mb + std::log(sb) - tgt_b;
  }
  if (!a.grad) return;
  // pass 3: g_a = s (p_a + ka q), g_b = s (p_b + kb q), q = softmax(m); then the targets
  const T ka = a.ka[i], kb = a.kb[i];
  const V vqa(s * ka / sm), vqb(s * kb / sm);
  if (a.rows) {
    const V vpa(s / sa), vpb(s / sb);
    for (j = 0; j + W <= n; j += W) {
      const V q = V::loadu(em + j);
      at::vec::fmadd(V::loadu(xa + j), vpa, vqa * q).store(xa + j);
      at::vec::fmadd(V::loadu(xb + j), vpb, vqb * q).store(xb + j);
    }
    for (; j < n; ++j) {
      xa[j] = xa[j] * (s / sa) + (s * ka / sm) * em[j];
      xb[j] = xb[j] * (s / sb) + (s * kb / sm) * em[j];
    }
    row_targets_(a, ra, xa, s);
    row_targets_(a, rb, xb, s);
  } else {
    for (j = 0; j + W <= n; j += W) {
      const V q = V::loadu(em + j);
      (vqa * q).store(xa + j);
      (vqb * q).store(xb + j);
    }
    for (; j < n; ++j) {
      xa[j] = (s * ka / sm) * em[j];
      xb[j] = (s * kb / sm) * em[j];
    }
  }
  xa[ya] -= s * ka * lam;
  xa[yb] -= s * ka * ml;
  xb[ya] -= s * kb * lam;
  xb[yb] -= s * kb * ml;
}

template <typename T>
void run(const Args<T>& a, int64_t c, int64_t P) {
  at::parallel_for(0, P, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> em(a.grad ? a.V : 0);
    for (int64_t i = begin; i < end; ++i) pair(a, i, em.data());
  });
  if (a.rows) {
    at::parallel_for(2 * P, c, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) plain_row(a, r);
    });
  }
}

}  // namespace

// (tok [c], nll_m [P]); x becomes the gradient when `grad`. See the top of this file.
std::vector<at::Tensor> lce_chunk(at::Tensor x, at::Tensor y, c10::optional<at::Tensor> yb,
                                  c10::optional<at::Tensor> coef, int64_t P, at::Tensor lam, at::Tensor ka,
                                  at::Tensor kb, bool rows, bool grad, double scale) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.is_contiguous(), "lce_chunk: x must be a contiguous 2-D CPU tensor");
  TORCH_CHECK(scale > 0, "lce_chunk: scale must be > 0");
  const int64_t c = x.size(0);
  TORCH_CHECK(2 * P <= c && y.numel() == c && y.scalar_type() == at::kLong && y.is_contiguous(), "lce_chunk: bad targets");
  TORCH_CHECK(rows || 2 * P == c, "lce_chunk: without row terms every row must be in a pair");
  auto tok = at::zeros({c}, x.options());
  auto nll_m = at::zeros({P}, x.options());
  if (yb.has_value()) {
    TORCH_CHECK(coef.has_value() && yb->numel() == c && coef->numel() == c && yb->is_contiguous() &&
                coef->is_contiguous() && yb->scalar_type() == at::kLong && coef->scalar_type() == x.scalar_type(),
                "lce_chunk: bad soft targets");
  }
  for (const auto& t : {lam, ka, kb}) {
    TORCH_CHECK(t.numel() >= P && t.is_contiguous() && t.scalar_type() == x.scalar_type(), "lce_chunk: bad pair inputs");
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lce_chunk", [&] {
    Args<scalar_t> a{x.data_ptr<scalar_t>(), y.data_ptr<int64_t>(),
                     yb.has_value() ? yb->data_ptr<int64_t>() : nullptr,
                     coef.has_value() ? coef->data_ptr<scalar_t>() : nullptr,
                     lam.data_ptr<scalar_t>(), ka.data_ptr<scalar_t>(), kb.data_ptr<scalar_t>(),
                     tok.data_ptr<scalar_t>(), nll_m.data_ptr<scalar_t>(), x.size(1), static_cast<scalar_t>(scale),
                     rows, grad};
    run(a, c, P);
  });
  return {tok, nll_m};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lce_chunk", &lce_chunk, "fused NTP + Mixup loss and gradient over one logits chunk (in place)");
}
