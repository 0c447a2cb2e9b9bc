"""curve.png: the returns and their 100-episode average against episodes, like the article's plot,
with the solving threshold and the env's name."""

from __future__ import annotations

import io

import numpy as np

from runtime.constants import ENV_ID

AVERAGE_WINDOW = 100


def plot_curve(returns: list[float], target: float, env_id: str = ENV_ID) -> bytes:
    """PNG bytes of the learning curve (matplotlib's headless Agg backend, imported here)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    values = np.asarray(returns, dtype=np.float64)
    episodes = np.arange(1, len(values) + 1)
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    start = np.maximum(episodes - AVERAGE_WINDOW, 0)
    average = (cumulative[episodes] - cumulative[start]) / (episodes - start)

    figure = Figure(figsize=(8, 4.5), dpi=100)
    axes = figure.subplots()
    axes.plot(episodes, values, color="tab:blue", alpha=0.3, linewidth=0.8, label="return")
    axes.plot(episodes, average, color="tab:blue", linewidth=2, label="100-episode average")
    axes.axhline(target, color="tab:green", linestyle="--", label=f"solved ({target:g})")
    axes.set_xlabel("episode")
    # CartPole-v1 pays 1 per step balanced; other envs' returns are their reward sums
    axes.set_ylabel("return (steps balanced)" if env_id == ENV_ID else "return (sum of rewards)")
    axes.set_title(f"REINFORCE on {env_id}")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
