"""Pictures of a run (matplotlib, headless): where, how the search went, and the results."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from stvcli.workspace import Workspace, check_writable  # noqa: E402


def sensitivity_heatmap(
    scores: torch.Tensor, locations: torch.Tensor, path: Path, title: str = "", sensitivity: str = "l2"
) -> Path:
    """Layers x heads heatmap of scores [L, H], the chosen locations [K, 2] marked."""
    n_layers, n_heads = scores.shape
    figure, axes = plt.subplots(figsize=(max(4, n_heads * 0.25 + 2), max(3, n_layers * 0.18 + 1.5)))
    image = axes.imshow(scores.numpy(), aspect="auto", cmap="viridis", origin="lower")
    axes.scatter(locations[:, 1].numpy(), locations[:, 0].numpy(), s=8, facecolors="none", edgecolors="red",
                 linewidths=0.7, label=f"chosen (K={len(locations)})")
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    axes.set_title(title or "sensitivity to demonstrations")
    axes.legend(loc="upper right", fontsize=7)
    label = "mean ||a_many - a_zero|| / ||a_zero||" if sensitivity == "relative" else "mean ||a_many - a_zero||"
    figure.colorbar(image, ax=axes, label=label)
    return _save(figure, path)


def reward_curve(curves: dict[str, list[float]], path: Path, window: int = 10) -> Path:
    """Mean reward per iteration (and a moving average) for each search."""
    figure, axes = plt.subplots(figsize=(6, 3.5))
    for name, rewards in curves.items():
        values = torch.tensor(rewards, dtype=torch.float32)
        axes.plot(values.numpy(), alpha=0.3)
        if len(values) >= window:
            smooth = values.unfold(0, window, 1).mean(1)
            axes.plot(range(window - 1, len(values)), smooth.numpy(), label=f"{name} (moving avg {window})")
        else:
            axes.plot([], [], label=name)
    axes.set_xlabel("iteration")
    axes.set_ylabel("reward (-CE of first answer token)")
    axes.legend(fontsize=8)
    return _save(figure, path)


def search_diagnostics(histories: dict[str, dict], diagnostics: dict | None, path: Path) -> Path:
    """The searches' health: reward mean with its spread across candidates, policy
    entropy, the share of choices each step changed, and (STV) the reward of the final
    pick against random picks, the mean vector and no edit at the same locations."""
    panels = 4 if diagnostics else 3
    figure, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.2))
    for name, history in histories.items():
        mean = torch.tensor(history.get("rewards", []), dtype=torch.float64)
        spread = torch.tensor(history.get("spread", [float("nan")] * len(mean)), dtype=torch.float64)
        steps = range(len(mean))
        axes[0].plot(steps, mean.numpy(), label=name)
        axes[0].fill_between(steps, (mean - spread).numpy(), (mean + spread).numpy(), alpha=0.2)
        axes[1].plot(history.get("entropy", []), label=name)
        axes[2].plot(history.get("changed", []), label=name)
    for ax, title in zip(axes, ("reward (mean +- spread)", "policy entropy (nats)", "share of choices changed")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7)
    if diagnostics:
        rewards = diagnostics["reward"]
        names = [n for n in ("none", "random", "random_best", "mean", "final") if n in rewards]
        axes[3].bar(names, [rewards[n] for n in names], color="tab:green")
        axes[3].set_title(f"STV reward on {diagnostics['queries']} held-out queries", fontsize=9)
        axes[3].tick_params(axis="x", rotation=30)
    return _save(figure, path)


def accuracy_chart(results: dict, path: Path) -> Path:
    """Accuracy by method with 95% intervals, one panel per task."""
    tasks = results["results"]
    figure, all_axes = plt.subplots(1, len(tasks), figsize=(1.2 + 1.1 * max(len(m) for m in tasks.values()), 3.8),
                                    squeeze=False)
    for axes, (task, methods) in zip(all_axes[0], tasks.items()):
        names = list(methods)
        accuracy = [100 * methods[n]["accuracy"] for n in names]
        low = [a - 100 * methods[n]["ci_low"] for a, n in zip(accuracy, names)]
        high = [100 * methods[n]["ci_high"] - a for a, n in zip(accuracy, names)]
        axes.bar(names, accuracy, yerr=[low, high], capsize=3, color="tab:blue")
        axes.set_title(task)
        axes.set_ylabel("accuracy (%)")
        axes.set_ylim(0, 100)
        axes.tick_params(axis="x", rotation=45)
    return _save(figure, path)


def write_report(workspace: Path, output: Path) -> list[Path]:
    """Every picture the workspace has the artifacts for."""
    from stvcli.stages.evaluate import read_results

    check_writable(output, "--output-path")
    space = Workspace(workspace)
    scan = space.load("scan")
    results = read_results(workspace / "results.json", fix="rerun `stv eval`")
    written = []
    model_name = Path(str(scan.meta.get("model"))).name
    written.append(sensitivity_heatmap(scan["scores"], scan["locations"], output / "sensitivity.png",
                                       f"{model_name} / {scan.settings.get('task')}",
                                       scan.settings.get("sensitivity", "l2")))
    curves, histories, diagnostics = {}, {}, None
    for name, kind in (("stv", "vectors"), ("mtv", "mtv"), ("mtv-add", "mtv-add")):
        if space.exists(kind):
            extra = space.load(kind).meta["extra"]
            curves[name] = extra.get("rewards", [])
            if extra.get("history"):
                histories[name] = extra["history"]
            if kind == "vectors":
                diagnostics = extra.get("diagnostics") or None
    if any(curves.values()):
        written.append(reward_curve({k: v for k, v in curves.items() if v}, output / "search_rewards.png"))
    if histories:
        written.append(search_diagnostics(histories, diagnostics, output / "search_diagnostics.png"))
    if results.get("results"):
        written.append(accuracy_chart(results, output / "accuracy.png"))
    return written


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temp, dpi=130)
    plt.close(figure)
    temp.replace(path)
    return path
