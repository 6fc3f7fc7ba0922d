"""The speed suite's results as the three-sided markdown table the docs show."""

from __future__ import annotations

from typing import Any


def markdown(results: dict[str, Any]) -> str:
    """The results as the three-sided table the README shows."""
    peak = results["matmul_peak_gflop_per_s"]
    lines = [
        f"Training speed on {results['threads']} CPU thread(s), commit {results.get('commit', '?')}; matmul peak "
        f"measured in the same run: {peak['start']}–{peak['end']} GFLOP/s. Times are the training epochs only; the "
        "tutorial loop, the expert's in-memory loop and convae take turns epoch by epoch in one process.",
        "",
        "| job | data (train images), batch | epochs (reference's) | tutorial s | expert s | convae s "
        "| convae vs tutorial | convae vs expert | GFLOP/s tutorial / expert / convae (convae's share of peak) "
        "| train loss tutorial / expert / convae | test RMSE tutorial / expert / convae | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["jobs"]:
        ref, expert, ours = row["reference"], row["expert"], row["convae"]
        load = row["load_average_1min"]
        lines.append(
            f"| {row['job']} | {row['dataset']} ({row['train_images']:,}), {row['batch_size']} "
            f"| {row['epochs']} ({row['reference_epochs']}) "
            f"| {ref['seconds']:.1f} | {expert['seconds']:.1f} | {ours['seconds']:.1f} "
            f"| **{row['speedup']:.2f}×** | **{row['speedup_vs_expert']:.2f}×** "
            f"| {ref['gflop_per_s']:.1f} / {expert['gflop_per_s']:.1f} / {ours['gflop_per_s']:.1f} "
            f"({ours['fraction_of_matmul_peak']:.0%}) "
            f"| {ref['final_train_loss']:.4f} / {expert['final_train_loss']:.4f} / {ours['final_train_loss']:.4f} "
            f"| {ref['test_rmse']:.4f} / {expert['test_rmse']:.4f} / {ours['test_rmse']:.4f} "
            f"| {min(load):.1f}–{max(load):.1f} |"
        )
    return "\n".join(lines) + "\n"
