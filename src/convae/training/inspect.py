"""What a ``--task inspect`` run adds to the one loop: DRAEM's simulated defects and its three losses.

DRAEM (Zavrtanik, Kristan & Skočaj, ICCV 2021; reference code github.com/VitjanZ/DRAEM,
train_DRAEM.py, checked against it) never sees a real defect. Each training batch gets
defects painted on (convae.data.defects: Perlin shapes filled with foreign texture,
blurred regions, CutPaste patches, scars; half the parts stay clean), and one step trains both networks:

* the reconstructive network undoes the paint: ``L2 + (1 − SSIM)`` against the clean part;
* the discriminative U-Net, given [painted part, reconstruction], segments the paint: a
  focal loss (γ = 2, torchvision's ``sigmoid_focal_loss`` on the logit difference, which is
  the softmax of the reference's two channels) against the painted mask.

With ``--crop N`` the batches are random N×N crops of the parts (Batches' patch mode: more
steps for the same pixels); the networks are fully convolutional and see whole parts everywhere
else. Each part's defect comes from its own generator, keyed by (seed, epoch, step, its place in
the global batch), so a resumed run paints exactly what the uninterrupted one painted and a
torchrun process paints its slice as one process would. Held-out and test parts are never
painted for training (nor used as textures); each epoch paints the held-out good parts with
fixed generators to report how well the
network finds simulated defects (pixel and image AUROC), which a user sees climb with no
real defect anywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from convae.data import Batches
from convae.data.corrupt import item_generators
from convae.data.defects import DefectSimulator
from convae.data.textures import load_anomaly_source
from convae.metrics import ssim_map
from convae.models.draem import pooled_peak
from convae.run.config import TrainConfig
from convae.run.splits import Splits
from convae.training.keep_best import remember_if_best, settle_on_best
from convae.training.tasks import ReconstructTask, Task, evaluate_loss

#: How many times each held-out part is painted for the per-epoch check (more samples, steadier AUROC).
VALIDATION_ROUNDS = 2
#: At most this many pixels go into the per-epoch pixel AUROC (a seeded subsample beyond it).
MAX_VALIDATION_PIXELS = 2_000_000
#: ``test_loss`` (the reconstruction's MSE over the test split) is measured on about this many
#: epochs of a run, and always on the first and the last. It is not what an inspect run is judged
#: by, and over a whole test split it took 1.3 s of a 7.3 s epoch (hubble, 128×128, 2 CPU cores,
#: 2026-12-07): measured every epoch it cost a sixth of every --max-time. The simulated check, which
#: a user watches, still runs every epoch.
TEST_LOSS_EPOCHS = 12


def inspect_loss(reconstruction: torch.Tensor, logits: torch.Tensor, clean: torch.Tensor,
                 masks: torch.Tensor) -> torch.Tensor:
    """DRAEM's loss of one batch: L2 + SSIM loss on the reconstruction, focal loss on the mask."""
    from torchvision.ops import sigmoid_focal_loss

    l2 = F.mse_loss(reconstruction, clean)
    ssim = (1 - ssim_map(reconstruction, clean)).mean()
    focal = sigmoid_focal_loss(logits[:, 1] - logits[:, 0], masks[:, 0], alpha=-1, gamma=2.0, reduction="mean")
    return l2 + ssim + focal


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else None


class InspectTask(ReconstructTask):
    """DRAEM: a reconstructive and a discriminative network, trained on simulated defects."""

    def __init__(self, config: TrainConfig, splits: Splits, device: torch.device) -> None:
        Task.__init__(self, config, splits, device)  # not ReconstructTask's: the loss is inspect_loss
        self.loss_fn, self.corruption = F.mse_loss, None
        channels, height, width = splits.train.shape
        sources = (load_anomaly_source(config.anomaly_source, channels, (height, width), config.seed)
                   if config.anomaly_source else None)
        # By default textures come from the training images (never the held-out ones).
        self.simulator = DefectSimulator(sources, pool=splits.train.images)

    def optimizer_settings(self) -> dict[str, Any]:
        return {}

    def build_model(self) -> torch.nn.Module:
        """In bf16 runs, the model in channels-last layout, oneDNN's (and cuDNN's) fast one for convolutions.

        A training step of ``draem`` at 128×128 took 0.649 s in fp32, 0.418 s in bf16 and 0.343 s in
        bf16 channels-last on 2 CPU cores (2026-12-07, benchmarks/trainer_options.py). fp32 runs keep
        the default layout: in fp32 its gradients were further from float64's (13 % against 4 %), and
        the tiny test's run failed more often in it (docs/inspect.md). The saved weights are
        contiguous either way.
        """
        model = super().build_model()
        return model.to(memory_format=torch.channels_last) if self.config.precision == "bf16" else model

    @property
    def crop(self) -> int:
        """The side of the training crops, or 0 for whole parts (also when --crop is not smaller than them)."""
        crop = self.config.crop or 0
        return crop if 0 < crop < min(self.splits.train.shape[1:]) else 0

    def batch_options(self) -> dict[str, Any]:
        # Batches' patch mode: random crops placed by (seed, epoch, step), about H·W/N² of them per part
        # and epoch, so an epoch is still the parts once in pixels but takes (H·W/N²)× the steps.
        return {"patch": self.crop, "sizes": self.splits.train.sizes} if self.crop else {}

    def loss(self, net, x, y, generator, autocast):
        painted, masks = self.simulator(x, generator.per_item(len(x)))
        with autocast:
            reconstruction, logits = net(painted, segment=True)
        return inspect_loss(reconstruction.float(), logits.float(), x, masks), None

    @torch.no_grad()
    def simulated_validation(self, model: torch.nn.Module) -> dict[str, float | None]:
        """Pixel and image AUROC on the held-out good parts with simulated defects (a fixed draw)."""
        val = self.splits.val
        if val is None or len(val) == 0:
            return {"val_pixel_auroc": None, "val_image_auroc": None}
        was_training = model.training
        model.eval()
        pixels, truth, scores, labels = [], [], [], []
        for round_ in range(VALIDATION_ROUNDS):
            for index, x in enumerate(Batches(val.images, self.config.batch_size, shuffle=False, seed=0,
                                              device=self.device)):
                generators = item_generators(self.config.seed, -1 - round_, index, range(len(x)), self.device)
                painted, masks = self.simulator(x, generators)
                maps, _ = model.defect_map(painted)
                pixels.append(maps.flatten().cpu())
                truth.append(masks.flatten().cpu())
                scores.append(pooled_peak(maps).cpu())
                labels.append(masks.flatten(1).amax(1).cpu())
        model.train(was_training)
        p, t = torch.cat(pixels), torch.cat(truth)
        if len(p) > MAX_VALIDATION_PIXELS:
            keep = torch.randperm(len(p), generator=torch.Generator().manual_seed(0))[:MAX_VALIDATION_PIXELS]
            p, t = p[keep], t[keep]
        return {"val_pixel_auroc": _auroc(t.numpy() > 0.5, p.double().numpy()),
                "val_image_auroc": _auroc(torch.cat(labels).numpy() > 0.5, torch.cat(scores).double().numpy())}

    def measures_test_loss(self, epoch: int) -> bool:
        """Whether epoch ``epoch``'s row measures ``test_loss``: the first, the last, every k-th."""
        every = max(1, round(self.config.epochs / TEST_LOSS_EPOCHS))
        return epoch == 1 or epoch % every == 0 or epoch >= self.config.epochs

    def _test_loss(self, model: torch.nn.Module) -> float:
        cfg = self.config
        test = self.splits.measured(self.splits.test).images
        return evaluate_loss(model, test, F.mse_loss, cfg.batch_size, self.device, None, cfg.seed)

    def remember(self, model, run_dir, rows):
        remember_if_best(run_dir, model, rows)

    def finish(self, model, run_dir, last):
        """A run whose held-out check (a mean over up to keep_best.WINDOW epochs) fell more than keep_best.MARGIN
        below its best, and whose last weights memorised the training parts, ends on that best epoch
        (convae.training.keep_best: a long run on a few dozen parts can memorise them)."""
        kept = settle_on_best(run_dir, model, last, self.memorisation)
        return {**last, **kept} if kept else last

    def memorisation(self, model: torch.nn.Module) -> float | None:
        """The reconstruction's MSE on the held-out good parts over its MSE on the training parts.

        Near 1 for a network that learned the texture; 2.4× and 3.5× in the runs that memorised their
        parts and collapsed (docs/inspect.md, "Keeping the best epoch"). None without held-out parts.
        """
        val, cfg = self.splits.val, self.config
        if val is None or len(val) == 0:
            return None
        held_out, train = (evaluate_loss(model, part.images, F.mse_loss, cfg.batch_size, self.device, None, cfg.seed)
                           for part in (val, self.splits.train))
        return held_out / max(train, 1e-12)

    def complete_row(self, model, row):
        return row if row.get("test_loss") is not None else {**row, "test_loss": self._test_loss(model)}

    def row(self, model, epoch, train_loss, extras, seen, seconds, lr):
        cfg = self.config
        return {
            "epoch": epoch, "train_loss": train_loss,
            "test_loss": self._test_loss(model) if self.measures_test_loss(epoch) else None,
            **self.simulated_validation(model),
            "seconds": round(seconds, 4),
            "images_per_s": round(seen / seconds, 1) if seconds > 0 else None,
            "loss": cfg.loss,  # what test_loss is: the reconstruction's MSE (training adds SSIM and focal)
        }

    def epoch_line(self, row: dict[str, Any]) -> str:
        found = "  ".join(f"{what} {row[key]:.3f}" for key, what in (("val_pixel_auroc", "pixel AUROC"),
                                                                     ("val_image_auroc", "image AUROC"))
                          if row.get(key) is not None)
        return (f"epoch {row['epoch']}/{self.config.epochs}  train loss {row['train_loss']:.4f}  held-out good "
                f"parts with simulated defects: {found or 'n/a'}  {row['seconds']:.1f}s  "
                f"{row['images_per_s'] or 0:,.1f} img/s")

    def start_line(self, run_dir):
        source = self.config.anomaly_source or "the parts themselves and Perlin textures"
        _, height, width = self.splits.train.shape
        crops = (f"random {self.crop}×{self.crop} crops of the {height}×{width} parts (detect sees whole parts)"
                 if self.crop else f"whole {height}×{width} parts")
        return super().start_line(run_dir).replace(", loss mse)", ", loss L2 + SSIM + focal)") + (
            f"\nsimulated defects: Perlin shapes, blurred regions, CutPaste patches and scars, filled from {source}; "
            f"trains on {crops} in {'bf16 autocast' if self.config.precision == 'bf16' else 'fp32'}")

    def config_json(self, model):
        stored = super().config_json(model)
        stored["inspect"] = {"anomaly_source": self.config.anomaly_source, "score": "segment",
                             "loss": "l2+ssim+focal"}
        return stored
