r"""MetaOptNet's multi-class SVM head (Crammer–Singer), solved and
differentiated in JAX.

MetaOptNet (Lee, Maji, Ravichandran & Soatto, "Meta-Learning with
Differentiable Convex Optimization", arXiv:1904.03758; its code
kjunelee/MetaOptNet, `models/classification_heads.py`,
`MetaOptNetHead_SVM_CS`, which "Adversarially Robust Few-Shot Learning: A
Meta-Learning Approach", arXiv:1910.00982, runs unchanged) fits, for each
task, a Crammer–Singer multi-class SVM to the support embeddings x_i (S of
them, labels y_i) through its dual, a QP over α ∈ R^{S×N}:

    min_α  ½ Σ_m ‖Σ_i α_i^m x_i‖² + ½ ‖α‖² − Σ_i α_i^{y_i}
    s.t.   α_i^m ≤ C·[m = y_i]   for every i, m
           Σ_m α_i^m = 0          for every i,

C = 0.1 (`C_REG`). In that code's matrices, with z = α flattened row by row
(index i·N + m): G = K ⊗ I_N + I (K = XXᵀ, the support Gram matrix; the
identity "helps avoid PSD error from the QP solver", their comment),
e = −onehot(y), the inequality z ≤ C·onehot(y) and the equality
(I_S ⊗ 1_Nᵀ) z = 0. The query logits are s·Σ_i α_i^m ⟨x_i, x⟩ with the learned
scale s of their `ClassificationHead` (from 1).

How it is solved here (`crammer_singer_dual`):

1. a primal–dual interior-point method (Mehrotra's predictor–corrector,
   `interior_point`, a fixed `IPM_ITERATIONS` iterations, dense Newton
   systems of size S·N + S) on the QP with its inputs `stop_gradient`ed,
   which finds the active constraints (λ_j > slack_j);
2. the "polish": the KKT system of the equality-constrained QP in which the
   active constraints hold as equalities, solved with `jnp.linalg.solve`
   (`solve_on_active_set`). Its solution is the QP's solution (exactly, when
   the active set is the optimum's), and JAX differentiates the linear solve:
   this is the implicit derivative of the KKT conditions that OptNet/qpth
   (MetaOptNet's solver) computes, with the active set held fixed.

Where it differs from the reference: qpth stops its interior-point method
after `maxIter` iterations (15 in MetaOptNet's head, 3 in its test script
and in the AQ code's attacks and test) and differentiates the KKT system at
that inexact point; this solves the QP to its optimum every time, in
training, in attacks and at test (docs/learners.md).

All functions are for ONE task, pure and un-jitted.
"""

from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp

Array = jax.Array

C_REG = 0.1            # MetaOptNetHead_SVM_CS's C_reg
IPM_ITERATIONS = 25    # interior-point iterations (measured: tests/test_svm.py)
ACTIVE_SET_ROUNDS = 3  # active-set corrections after it
_STEP_TO_BOUNDARY = 0.99


def crammer_singer_qp(gram: Array, labels: Array, n_way: int,
                      c_reg: float = C_REG):
  """The dual QP of MetaOptNet's Crammer–Singer SVM in the form
  min ½zᵀGz + qᵀz s.t. z ≤ h, Az = 0.

  Args:
    gram: K = XXᵀ, `[S, S]`.
    labels: `[S]` support labels in 0..n_way-1.
    n_way: N.
    c_reg: C.

  Returns:
    (G `[S·N, S·N]`, q `[S·N]`, h `[S·N]`, A `[S, S·N]`), z = α flattened
    row by row.
  """
  s = gram.shape[0]
  onehot = jax.nn.one_hot(labels, n_way, dtype=gram.dtype).reshape(-1)
  g = jnp.kron(gram + jnp.eye(s, dtype=gram.dtype),
               jnp.eye(n_way, dtype=gram.dtype))   # K ⊗ I + I
  a = jnp.kron(jnp.eye(s, dtype=gram.dtype),
               jnp.ones((1, n_way), gram.dtype))
  return g, -onehot, c_reg * onehot, a


def _max_step(v: Array, dv: Array) -> Array:
  """The largest t ≤ 1 with v + t·dv ≥ 0 (v > 0)."""
  ratios = jnp.where(dv < 0, -v / jnp.where(dv < 0, dv, -1.0), jnp.inf)
  return jnp.minimum(1.0, jnp.min(ratios))


def interior_point(g: Array, q: Array, h: Array, a: Array, *,
                   num_iterations: int = IPM_ITERATIONS):
  """Mehrotra's predictor–corrector interior-point method for
  min ½zᵀGz + qᵀz s.t. z ≤ h, Az = 0, from z = 0, slacks and multipliers 1.

  Each iteration factors the reduced Newton system
  [[G + diag(λ/s), Aᵀ], [A, 0]] once and solves it twice (the affine
  direction, then the centred and corrected one); the step keeps s, λ > 0
  (0.99 of the way to the boundary). Once the mean complementarity s·λ/n
  is below 1e-10 (of the problem's scale) the iterate stops moving, so a
  fixed iteration count is safe under `jit`/`vmap`.

  Returns:
    (z, slack s = h − z at convergence, inequality multipliers λ).
  """
  n, p = g.shape[0], a.shape[0]
  dtype = g.dtype
  # Converged: the duality gap n·μ below this fraction of |objective|.
  rtol = 1e-12 if dtype == jnp.float64 else 1e-6

  def newton(lu_piv, z, s, lam, nu, r_c):
    r_d = g @ z + q + lam + a.T @ nu
    r_in = z + s - h
    rhs = jnp.concatenate([-r_d - (lam * r_in - r_c) / s, -(a @ z)])
    sol = jax.scipy.linalg.lu_solve(lu_piv, rhs)
    dz, dnu = sol[:n], sol[n:]
    ds = -r_in - dz
    return dz, ds, (-r_c - lam * ds) / s, dnu

  def iteration(_, carry):
    z, s, lam, nu = carry
    mu = jnp.dot(s, lam) / n
    kkt = jnp.block([[g + jnp.diag(lam / s), a.T],
                     [a, jnp.zeros((p, p), dtype)]])
    lu_piv = jax.scipy.linalg.lu_factor(kkt)
    _, ds, dlam, _ = newton(lu_piv, z, s, lam, nu, s * lam)
    t = jnp.minimum(_max_step(s, ds), _max_step(lam, dlam))
    mu_affine = jnp.dot(s + t * ds, lam + t * dlam) / n
    sigma = (mu_affine / mu) ** 3
    dz, ds, dlam, dnu = newton(lu_piv, z, s, lam, nu,
                               s * lam + ds * dlam - sigma * mu)
    t = jnp.minimum(1.0, _STEP_TO_BOUNDARY * jnp.minimum(
        _max_step(s, ds), _max_step(lam, dlam)))
    objective = 0.5 * z @ (g @ z) + q @ z
    t = jnp.where(n * mu < rtol * jnp.abs(objective), 0.0, t)
    return z + t * dz, s + t * ds, lam + t * dlam, nu + t * dnu

  init = (jnp.zeros(n, dtype), jnp.ones(n, dtype), jnp.ones(n, dtype),
          jnp.zeros(p, dtype))
  z, s, lam, _ = jax.lax.fori_loop(0, num_iterations, iteration, init)
  return z, s, lam


def solve_on_active_set(g: Array, q: Array, h: Array, a: Array,
                        active: Array) -> Tuple[Array, Array]:
  """The solution of min ½zᵀGz + qᵀz s.t. z_j = h_j (j active), Az = 0: the
  KKT system [[F·G + diag(active), F·Aᵀ], [A, 0]] [z; ν] = [−F·q + active·h;
  0] with F = diag(not active), solved densely. Differentiable in G, q, h
  (`active` is a constant of the derivative).

  Returns:
    (z, ν), ν the multipliers of Az = 0.
  """
  n, p = g.shape[0], a.shape[0]
  free = (~active).astype(g.dtype)[:, None]
  kkt = jnp.block([[free * g + jnp.diag(active.astype(g.dtype)),
                    free * a.T],
                   [a, jnp.zeros((p, p), g.dtype)]])
  rhs = jnp.concatenate([jnp.where(active, h, -q), jnp.zeros(p, g.dtype)])
  sol = jnp.linalg.solve(kkt, rhs)
  return sol[:n], sol[n:]


def _feasible_rows(active: Array, labels: Array, n_way: int) -> Array:
  """`active` with no row entirely active: a row's entries sum to 0, so not
  all of its N bounds (which sum to C) can hold; where a set says so, its
  label entry is freed."""
  rows = active.reshape(-1, n_way)
  onehot = jax.nn.one_hot(labels, n_way, dtype=bool)
  return (rows & ~(jnp.all(rows, axis=1, keepdims=True) & onehot)
          ).reshape(-1)


def refine_active_set(g: Array, q: Array, h: Array, a: Array,
                      active: Array, labels: Array, n_way: int, *,
                      rounds: int = ACTIVE_SET_ROUNDS) -> Array:
  """Primal–dual active-set steps (Hintermüller, Ito & Kunisch 2002) from
  `active`: solve on the set, then keep an active bound whose multiplier
  λ_j = −(Gz + q + Aᵀν)_j is positive and add a free entry that exceeds its
  bound. A set that satisfies the KKT conditions is a fixed point; the
  interior-point method's set is right or nearly so, and these steps make
  it exact where the iterate's slacks and multipliers were too small to
  tell apart."""
  def step(_, active):
    z, nu = solve_on_active_set(g, q, h, a, active)
    lam = -(g @ z + q + a.T @ nu)
    return _feasible_rows(jnp.where(active, lam > 0, z > h), labels, n_way)
  return jax.lax.fori_loop(0, rounds, step, active)


def crammer_singer_dual(support_embeddings: Array, labels: Array,
                        n_way: int, *, c_reg: float = C_REG,
                        num_iterations: int = IPM_ITERATIONS) -> Array:
  """α `[S, N]`, the Crammer–Singer SVM dual of MetaOptNet's head on the
  support embeddings X `[S, D]` (see the module docstring): the active set
  found by the interior-point method and `refine_active_set`, then the QP
  solved on it so that the meta-gradient flows through the KKT conditions
  into X."""
  x = support_embeddings
  g, q, h, a = crammer_singer_qp(x @ x.T, labels, n_way, c_reg)
  constants = jax.lax.stop_gradient((g, q, h, a))
  _, slack, lam = interior_point(*constants, num_iterations=num_iterations)
  active = refine_active_set(
      *constants, _feasible_rows(lam > slack, labels, n_way), labels, n_way)
  return solve_on_active_set(g, q, h, a, active)[0].reshape(-1, n_way)


def svm_logits(query_embeddings: Array, support_embeddings: Array,
               alpha: Array, scale: Array) -> Array:
  """MetaOptNet's SVM logits s·Σ_i α_i^m ⟨x_i, x⟩, `[Q, N]`."""
  return scale * ((query_embeddings @ support_embeddings.T) @ alpha)
