"""Principal component analysis by gradient descent on the reconstruction error.

theta is the d x k projection matrix W, flattened row by row (``W.ravel()``),
for data with d columns and k components. The providers minimise

    1/2 * sum over rows of ||x - W W^T x||^2,

a sum over rows, so the partial gradients of the providers add up to the
gradient over the pooled rows. With y = W^T x, the gradient of one row is

    -2 x y^T + x y^T (W^T W) + W y y^T.

Its minima are the matrices whose columns form an orthonormal basis of the
span of the top k principal directions, so the learned W is that subspace up
to a rotation within it, not the individual eigenvectors. W = 0 is a
stationary point, so training starts from :meth:`PCA.initial_theta`, a random
orthonormal W.

The model does not subtract a mean: the rows must be centred beforehand, as
the "digits" data set is. Labels y are accepted and ignored.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gradchain.errors import ConfigError
from gradchain.models._arrays import as_matrix, require_rows

FloatArray = npt.NDArray[np.float64]


def orthonormal_basis(W: npt.ArrayLike) -> FloatArray:
    """Return an orthonormal basis of the column span of W (its thin QR factor Q).

    Raises ValueError when the columns of W are linearly dependent, because
    then they span fewer than k dimensions.
    """
    matrix = np.asarray(W, dtype=np.float64)
    Q, R = np.linalg.qr(matrix)
    diagonal = np.abs(np.diag(R))
    if diagonal.size and diagonal.min() <= 1e-12 * max(diagonal.max(), 1.0):
        raise ValueError(
            f"the {matrix.shape[1]} columns of W are linearly dependent, so they do not span "
            f"a {matrix.shape[1]}-dimensional subspace"
        )
    return Q


def principal_angles(A: npt.ArrayLike, B: npt.ArrayLike) -> FloatArray:
    """Return the principal angles in degrees between the column spans of A and B, ascending.

    The cosines of the angles are the singular values of Q_A^T Q_B for
    orthonormal bases Q_A and Q_B. Both matrices need the same number of rows.
    """
    cosines = np.linalg.svd(orthonormal_basis(A).T @ orthonormal_basis(B), compute_uv=False)
    angles: FloatArray = np.sort(np.degrees(np.arccos(np.clip(cosines, -1.0, 1.0))))
    return angles


def top_components(X: npt.ArrayLike, components: int) -> tuple[FloatArray, float]:
    """Return the top k right singular vectors of X as a d x k matrix, and their explained variance.

    The explained variance ratio is the share of the sum of squares of X that
    their span keeps. The SVD is numpy's, of the rows as given, without
    centring them.
    """
    matrix = as_matrix(X)
    _, singular_values, Vt = np.linalg.svd(matrix, full_matrices=False)
    total = float(np.sum(singular_values**2))
    ratio = float(np.sum(singular_values[:components] ** 2) / total) if total > 0 else 0.0
    return Vt[:components].T, ratio


class PCA:
    """Principal subspace of ``components`` dimensions, learned from centred rows.

    ``seed`` fixes the random orthonormal starting point of
    :meth:`initial_theta`, so that runs are reproducible.
    """

    def __init__(self, components: int = 2, seed: int = 0) -> None:
        if components < 1:
            raise ConfigError(f"components must be at least 1, got {components}")
        self.components = components
        self.seed = seed

    def _projection(self, theta: npt.ArrayLike, columns: int) -> FloatArray:
        theta_array = np.asarray(theta, dtype=np.float64)
        expected = columns * self.components
        if theta_array.shape != (expected,):
            raise ValueError(
                f"theta must have shape ({expected},): a {columns} x {self.components} projection "
                f"for {columns} data columns and {self.components} components, "
                f"got shape {theta_array.shape}"
            )
        return theta_array.reshape(columns, self.components)

    def gradient_sum(self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike) -> FloatArray:
        """Compute the gradient of 1/2 * sum of ||x - W W^T x||^2 over the rows, flattened like W.

        Raises ValueError when W is all zeros: that is a stationary point
        that gradient descent never leaves, and it means the job started from
        zeros instead of :meth:`initial_theta`.
        """
        del y
        X_array = as_matrix(X)
        W = self._projection(theta, X_array.shape[1])
        if not np.any(W):
            raise ValueError(
                "W is all zeros, a stationary point of the reconstruction error that gradient "
                "descent cannot leave; start from PCA.initial_theta instead of zeros"
            )
        # A diverging run makes W huge. The check below reports that instead of numpy warnings.
        with np.errstate(over="ignore", invalid="ignore"):
            Y = X_array @ W
            XtY = X_array.T @ Y
            gradient = -2.0 * XtY + XtY @ (W.T @ W) + W @ (Y.T @ Y)
        if not np.all(np.isfinite(gradient)):
            raise ValueError(
                f"the gradient overflowed at max |W| = {np.max(np.abs(W)):.3g}, so gradient "
                "descent has diverged; lower learning_rate"
            )
        return np.asarray(gradient.ravel(), dtype=np.float64)

    def loss(self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike) -> float:
        """Compute the mean over rows of the reconstruction error ||x - W W^T x||^2."""
        del y
        X_array = as_matrix(X)
        require_rows(X_array, "reconstruction error")
        W = self._projection(theta, X_array.shape[1])
        residuals = X_array - (X_array @ W) @ W.T
        return float(np.mean(np.sum(residuals**2, axis=1)))

    def evaluate(
        self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike
    ) -> dict[str, float]:
        """Compare the learned subspace with numpy's SVD of the rows of X.

        The metrics are:

        - ``loss``: the mean reconstruction error with W as given;
        - ``explained_variance_ratio``: the share of the sum of squares of X
          that the orthogonal projection onto the span of W keeps;
        - ``svd_explained_variance_ratio``: the same share for the top k right
          singular vectors of X, which is the largest possible;
        - ``max_principal_angle_degrees``: the largest principal angle between
          the two subspaces.
        """
        X_array = as_matrix(X)
        require_rows(X_array, "metrics")
        W = self._projection(theta, X_array.shape[1])
        reference, svd_ratio = top_components(X_array, self.components)
        total = float(np.sum(X_array**2))
        kept = float(np.sum((X_array @ orthonormal_basis(W)) ** 2))
        return {
            "loss": self.loss(theta, X_array, y),
            "explained_variance_ratio": kept / total if total > 0 else 0.0,
            "svd_explained_variance_ratio": svd_ratio,
            "max_principal_angle_degrees": float(principal_angles(W, reference)[-1]),
        }

    def initial_theta(self, parameters: int) -> FloatArray:
        """Return a random d x k matrix with orthonormal columns, flattened, for d = parameters / k.

        Raises ValueError when ``parameters`` is not a multiple of k or gives
        fewer rows than components.
        """
        columns = self._columns(parameters)
        rng = np.random.default_rng(self.seed)
        return orthonormal_basis(rng.normal(size=(columns, self.components))).ravel()

    def _columns(self, parameters: int) -> int:
        columns, remainder = divmod(parameters, self.components)
        if remainder or columns < self.components:
            raise ValueError(
                f"{parameters} parameters do not form a d x {self.components} projection with "
                f"d >= {self.components}: job.features must be (data columns) x {self.components}"
            )
        return columns

    def parameter_count(self, X: FloatArray, y: FloatArray) -> int:
        """Return d * k for data with d columns."""
        del y
        return int(as_matrix(X).shape[1]) * self.components

    def check_data(self, X: FloatArray, y: FloatArray, parameters: int) -> None:
        """Raise ValueError unless parameters = (columns of X) * components.

        The labels may hold anything finite, because PCA ignores them.
        """
        del y
        columns = int(as_matrix(X).shape[1])
        if parameters != columns * self.components:
            raise ValueError(
                f"{columns} feature columns with {self.components} components need "
                f"job.features = {columns * self.components}, but job.features is {parameters}"
            )
        if columns < self.components:
            raise ValueError(
                f"{columns} feature columns are fewer than the {self.components} components"
            )
