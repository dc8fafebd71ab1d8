"""Spectral clustering of speaker embeddings, with an eigengap estimate of the speaker count.

The recipe is 3D-Speaker's (which senko ships): a cosine affinity pruned to each row's nearest
neighbours and symmetrised, then the spectrum of its graph Laplacian (``D - A`` by default, which
counted speakers better than the normalised ``I - D^-1/2 A D^-1/2`` in our measurements; see
:class:`~.options.DiarizerConfig`), whose first eigenvectors are clustered by a small seeded k-means.

Long recordings are bounded: at most ``max_cluster_windows`` evenly spaced windows are clustered
and every window joins the nearest cluster centroid, so memory is ``O(cap^2 + n)`` and time
``O(cap^3 + n k)`` however long the audio.
"""

from __future__ import annotations

import logging

import numpy as np

from .options import DiarizerConfig

LOG = logging.getLogger(__name__)

# The seed of k-means' initialisation: the same embeddings always give the same labels.
KMEANS_SEED = 0
# Lloyd iterations per k-means run; the spectral embedding's clusters are tight and converge in a few.
KMEANS_ITERATIONS = 100
# Smallest norm treated as non-zero when rows are normalised (a silent window's embedding may be ~0).
EPSILON = 1e-10


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """``[n, d]`` rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, EPSILON)


def pruned_affinity(embeddings: np.ndarray, keep: int) -> np.ndarray:
    """Cosine affinity keeping each row's ``keep`` largest entries, symmetrised, zero diagonal.

    Parameters
    ----------
    embeddings : np.ndarray
        ``[n, d]`` embeddings.
    keep : int
        Entries kept per row (the others, and negative similarities, become 0).

    Returns
    -------
    np.ndarray
        ``[n, n]`` float64 symmetric non-negative affinity.
    """
    unit = normalise_rows(np.asarray(embeddings, np.float64))
    affinity = unit @ unit.T
    np.fill_diagonal(affinity, 0.0)
    if keep < affinity.shape[0]:
        cut = np.argpartition(affinity, -keep, axis=1)[:, :-keep]
        np.put_along_axis(affinity, cut, 0.0, axis=1)
    np.maximum(affinity, 0.0, out=affinity)
    return 0.5 * (affinity + affinity.T)


def laplacian_spectrum(affinity: np.ndarray, normalised: bool) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of the graph Laplacian of ``affinity``.

    Parameters
    ----------
    affinity : np.ndarray
        ``[n, n]`` symmetric non-negative affinity.
    normalised : bool
        ``I - D^-1/2 A D^-1/2`` (eigenvalues in [0, 2]) when true, else ``D - A`` (3D-Speaker's).

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        ``[n]`` eigenvalues and ``[n, n]`` eigenvectors (columns).
    """
    degree = affinity.sum(axis=1)
    if not normalised:
        return np.linalg.eigh(np.diag(degree) - affinity)
    scale = 1.0 / np.sqrt(np.maximum(degree, EPSILON))
    laplacian = np.eye(affinity.shape[0]) - scale[:, None] * affinity * scale[None, :]
    return np.linalg.eigh(laplacian)


def eigengap_count(eigenvalues: np.ndarray, low: int, high: int) -> int:
    """The count ``k`` in ``[low, high]`` with the largest gap ``lambda_k - lambda_(k-1)`` (0-based).

    Parameters
    ----------
    eigenvalues : np.ndarray
        ``[n]`` ascending Laplacian eigenvalues.
    low, high : int
        The allowed counts; ``high`` is capped at ``n - 1``.

    Returns
    -------
    int
        The estimated number of clusters.
    """
    high = min(high, eigenvalues.size - 1)
    if high <= low:
        return max(1, min(low, eigenvalues.size))
    gaps = eigenvalues[low : high + 1] - eigenvalues[low - 1 : high]
    return low + int(np.argmax(gaps))


def kmeans(points: np.ndarray, k: int, restarts: int, seed: int = KMEANS_SEED) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; the run of lowest inertia wins.

    Parameters
    ----------
    points : np.ndarray
        ``[n, d]`` points, ``n >= k``.
    k : int
        Number of clusters.
    restarts : int
        Independent seedings.
    seed : int
        Seed of the random generator (deterministic results).

    Returns
    -------
    np.ndarray
        ``[n]`` int64 labels in ``0..k-1``.
    """
    rng = np.random.default_rng(seed)
    best_labels, best_inertia = np.zeros(points.shape[0], np.int64), np.inf
    for _ in range(max(1, restarts)):
        labels, inertia = _lloyd(points, _kmeans_plus_plus(points, k, rng))
        if inertia < best_inertia - 1e-12:
            best_labels, best_inertia = labels, inertia
    return best_labels


def _kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``[k, d]`` initial centres: each next one drawn with probability proportional to squared distance."""
    centres = [points[rng.integers(points.shape[0])]]
    distance = ((points - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = distance.sum()
        index = (
            int(rng.choice(points.shape[0], p=distance / total)) if total > 0 else int(rng.integers(points.shape[0]))
        )
        centres.append(points[index])
        distance = np.minimum(distance, ((points - points[index]) ** 2).sum(axis=1))
    return np.stack(centres)


def _lloyd(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, float]:
    """Lloyd iterations from ``centres`` until the labels settle: ``([n] labels, inertia)``."""
    labels = np.full(points.shape[0], -1, np.int64)
    for _ in range(KMEANS_ITERATIONS):
        distances = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        new = distances.argmin(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for cluster in range(centres.shape[0]):
            members = points[labels == cluster]
            if members.size:  # an emptied cluster keeps its centre
                centres[cluster] = members.mean(axis=0)
    distances = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    return labels, float(distances[np.arange(points.shape[0]), labels].sum())


def centroids(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[k, d]`` unit-norm mean of each label's unit-norm embeddings (labels ``0..k-1``)."""
    unit = normalise_rows(np.asarray(embeddings, np.float64))
    count = int(labels.max()) + 1 if labels.size else 0
    sums = np.zeros((count, unit.shape[1]))
    np.add.at(sums, labels, unit)
    return normalise_rows(sums)


def nearest_centroid(embeddings: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``[n]`` index of the centroid of highest cosine for each of ``[n, d]`` embeddings."""
    return (normalise_rows(np.asarray(embeddings, np.float64)) @ centres.T).argmax(axis=1)


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered ``0..k-1`` in order of first appearance."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse].astype(np.int64)


def absorb_small_clusters(embeddings: np.ndarray, labels: np.ndarray, min_size: int) -> np.ndarray:
    """Members of clusters with fewer than ``min_size`` windows join the nearest larger cluster."""
    sizes = np.bincount(labels)
    large = np.flatnonzero(sizes >= min_size)
    if large.size == 0 or large.size == sizes.size:
        return labels
    centres = centroids(embeddings, labels)[large]
    small = ~np.isin(labels, large)
    result = labels.copy()
    result[small] = large[nearest_centroid(embeddings[small], centres)]
    return compact_labels(result)


def merge_similar_clusters(embeddings: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """Merge the two clusters of most similar centroids while their cosine exceeds ``threshold``."""
    labels = compact_labels(labels)
    while labels.max() > 0:
        centres = centroids(embeddings, labels)
        similarity = np.triu(centres @ centres.T, 1) - np.tril(np.full((centres.shape[0],) * 2, 2.0))
        first, second = np.unravel_index(int(np.argmax(similarity)), similarity.shape)
        if similarity[first, second] <= threshold:
            break
        LOG.debug("merging clusters %s and %s (cosine %.3f)", first, second, similarity[first, second])
        labels = compact_labels(np.where(labels == second, first, labels))
    return labels


def spectral_labels(embeddings: np.ndarray, low: int, high: int, config: DiarizerConfig) -> np.ndarray:
    """Spectral clustering of a (bounded) set of embeddings.

    Parameters
    ----------
    embeddings : np.ndarray
        ``[n, d]`` embeddings, ``n <= config.max_cluster_windows``.
    low, high : int
        The allowed counts (equal for a given count).
    config : DiarizerConfig
        Pruning, restarts and the small-set rule.

    Returns
    -------
    np.ndarray
        ``[n]`` labels ``0..k-1``.
    """
    n = embeddings.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    if n <= high and low == high:
        return np.arange(n, dtype=np.int64)  # fewer windows than speakers: one each
    if n < config.min_windows and low == 1 < high:
        return np.zeros(n, np.int64)
    keep = min(n - 1, max(config.min_neighbours, int(np.ceil(config.prune_fraction * n))))
    eigenvalues, eigenvectors = laplacian_spectrum(pruned_affinity(embeddings, keep), config.normalised_laplacian)
    count = low if low == high else eigengap_count(eigenvalues, low, high)
    LOG.debug("spectral clustering: %s windows, %s clusters (range %s-%s)", n, count, low, high)
    if count == 1:
        return np.zeros(n, np.int64)
    spectral = eigenvectors[:, :count]
    if config.normalised_laplacian:
        spectral = normalise_rows(spectral)  # Ng, Jordan and Weiss
    return compact_labels(kmeans(spectral, count, config.kmeans_restarts))


def _tidy(embeddings: np.ndarray, labels: np.ndarray, low: int, config: DiarizerConfig) -> np.ndarray:
    """Estimated clusters with tiny ones absorbed and (optionally) similar ones merged, never below ``low``."""
    tidied = absorb_small_clusters(embeddings, labels, config.min_cluster_windows)
    if config.merge_cosine is not None:
        tidied = merge_similar_clusters(embeddings, tidied, config.merge_cosine)
    return tidied if tidied.max() + 1 >= min(low, labels.max() + 1) else labels


def cluster_embeddings(embeddings: np.ndarray, low: int, high: int, config: DiarizerConfig) -> np.ndarray:
    """Speaker labels of window embeddings, at most ``config.max_cluster_windows`` clustered at once.

    Parameters
    ----------
    embeddings : np.ndarray
        ``[n, d]`` window embeddings in time order.
    low, high : int
        The allowed speaker counts (``low == high`` for a given count).
    config : DiarizerConfig
        The clustering knobs.

    Returns
    -------
    np.ndarray
        ``[n]`` int64 labels ``0..k-1``, numbered in order of first appearance.
    """
    n = embeddings.shape[0]
    subset = np.arange(n)
    if n > config.max_cluster_windows:
        subset = np.unique(np.linspace(0, n - 1, config.max_cluster_windows).round().astype(np.int64))
    chosen = embeddings[subset]
    labels = spectral_labels(chosen, low, high, config)
    if low < high and labels.size:
        labels = _tidy(chosen, labels, low, config)
    if subset.size < n:
        labels = nearest_centroid(embeddings, centroids(chosen, labels))
    return compact_labels(labels)
