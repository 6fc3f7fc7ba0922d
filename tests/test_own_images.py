"""Your own images at full resolution: patches, tiles, the inspection layout, pixel metrics, overlays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_photo
from PIL import Image

from convae.applications.anomaly.pixels import aupro, pixel_auroc, pro_curve
from convae.applications.tiles import apply_tiled, blend_window, tile_starts
from convae.bench.inspection import inspection_parts, paint_defect, write_inspection_dataset
from convae.core.errors import DataError
from convae.data import Batches, load_dataset, load_folder
from convae.data.patches import patch_set

pytestmark = pytest.mark.usefixtures("one_thread")


def _photos(root: Path, sizes: list[tuple[int, int]], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(smooth_photo(rng, h, w)).save(root / f"photo{i}.png")
    return root


# -- patches ---------------------------------------------------------------------------------


def test_patch_batches_cut_inside_each_image_and_repeat_for_the_same_step() -> None:
    images = torch.zeros(2, 1, 40, 50, dtype=torch.uint8)
    images[0, :, :20, :30] = 1  # image 0 is 20×30 on the canvas; every patch of it must be all ones
    images[1] = 2
    sizes = torch.tensor([[20, 30], [40, 50]])
    batches = Batches(images, 4, shuffle=True, seed=3, patch=10, sizes=sizes)
    # about one image's area per image: round(600/100) = 6 and round(2000/100) = 20
    assert batches.items == 26 and len(batches) == 7
    first = list(batches)
    again = list(Batches(images, 4, shuffle=True, seed=3, patch=10, sizes=sizes))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    values = torch.cat([b.flatten(1) for b in first]) * 255
    assert values.shape == (26, 100)
    per_patch = values.round().long()
    assert ((per_patch == 1).all(1) | (per_patch == 2).all(1)).all(), "a patch reached past its image into the canvas"
    assert int((per_patch == 1).all(1).sum()) == 6
    other_epoch = list(Batches(images, 4, shuffle=True, seed=3, epoch=1, patch=10, sizes=sizes))
    assert not all(torch.equal(a, b) for a, b in zip(first, other_epoch))


def test_patch_shards_together_are_the_single_process_batch() -> None:
    rng = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 24, 24), dtype=torch.uint8, generator=rng)
    whole = list(Batches(images, 6, shuffle=True, seed=1, patch=8))
    parts = [list(Batches(images, 6, shuffle=True, seed=1, patch=8, shard=(r, 2))) for r in range(2)]
    for step, batch in enumerate(whole):
        if len(batch) >= 2:
            assert torch.equal(torch.cat([parts[0][step], parts[1][step]]), batch)


def test_an_image_smaller_than_the_patch_is_named() -> None:
    images = torch.zeros(2, 1, 16, 16, dtype=torch.uint8)
    with pytest.raises(DataError, match=r"image 1 is 6×16 \(H×W\), smaller than the 8×8 patch"):
        Batches(images, 2, shuffle=False, seed=0, patch=8, sizes=torch.tensor([[16, 16], [6, 16]]))


def test_a_folder_of_different_sizes_loads_on_a_canvas_only_for_patches(tmp_path: Path) -> None:
    root = _photos(tmp_path / "p", [(30, 40), (50, 20), (30, 40)])
    with pytest.raises(DataError, match="all images must have the same size"):
        load_folder(root, "train")
    data = load_folder(root, "train", any_size=True)
    assert data.images.shape[2:] == (50, 40)
    assert sorted(map(tuple, data.sizes.tolist())) == sorted(data.image_size(i) for i in range(len(data)))
    for i in range(len(data)):
        h, w = data.image_size(i)
        original = np.asarray(Image.open(root / data.ids[i]))
        assert np.array_equal(data.images[i, :, :h, :w].permute(1, 2, 0).numpy(), original)
        assert int(data.images[i, :, h:, :].sum() + data.images[i, :, :, w:].sum()) == 0
    again = load_folder(root, "train", any_size=True)  # from the cache: the sizes come back too
    assert torch.equal(again.sizes, data.sizes) and torch.equal(again.images, data.images)
    fixed = patch_set(data, 16, seed=0)
    assert fixed.images.shape[1:] == (3, 16, 16) and torch.equal(fixed.images, patch_set(data, 16, seed=0).images)


# -- tiles -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(37, 53), (16, 16), (9, 30), (64, 17)])
def test_tiles_of_a_pixelwise_function_give_it_back_exactly_at_the_input_size(size: tuple[int, int]) -> None:
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = apply_tiled(lambda x: torch.cat([x * 0.5, x.mean(1, keepdim=True)], 1), image, (16, 16), batch=5)
    assert out.shape == (4, *size)
    expected = image.float() / 255
    assert torch.allclose(out[:3], expected * 0.5, atol=1e-6)
    assert torch.allclose(out[3], expected.mean(0), atol=1e-6)


def test_tile_places_cover_the_image_and_the_window_is_positive() -> None:
    assert tile_starts(100, 32, 16) == [0, 16, 32, 48, 64, 68]
    assert tile_starts(10, 32, 16) == [0]
    window = blend_window(8, 6)
    assert window.min() > 0 and window.max() == pytest.approx(window[3:5, 2:4].max())


def test_tiles_hide_the_seams_of_a_convolution() -> None:
    """A 5×5 blur in tiles against the blur of the whole image: blended tiles are far closer
    to it than hard-edged tiles without overlap."""
    conv = torch.nn.Conv2d(1, 1, 5, padding=2, bias=False)
    torch.nn.init.constant_(conv.weight, 1 / 25)
    image = torch.rand(1, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = conv(image[None])[0]
        blended = apply_tiled(conv, image, (32, 32))
        hard = apply_tiled(conv, image, (32, 32), stride=(32, 32))
    inner = (slice(None), slice(2, -2), slice(2, -2))
    assert (blended - whole)[inner].abs().mean() < 0.5 * (hard - whole)[inner].abs().mean()


# -- pixel metrics ---------------------------------------------------------------------------


def test_aupro_and_pixel_auroc_on_hand_computed_cases() -> None:
    # one image, 1×4 pixels; pixel 0 is a defect region of size 1.
    maps, masks = np.array([[[0.9, 0.8, 0.1, 0.2]]]), np.array([[[1, 0, 0, 0]]])
    assert pixel_auroc(maps, masks) == 1.0 and aupro(maps, masks) == 1.0
    # the defect (0.5) is above one of three normals: AUROC 1/3; it is only reached at FPR 2/3 > 0.3: AUPRO 0
    maps = np.array([[[0.5, 0.9, 0.1, 0.7]]])
    assert pixel_auroc(maps, masks) == pytest.approx(1 / 3) and aupro(maps, masks) == 0.0
    # two regions: A = {0} (score 0.9), B = {2, 3} (scores 0.8, 0.1); normals 1, 4..9 score 0.85, 0.0 …
    maps = np.array([[[0.9, 0.85, 0.8, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]])
    masks = np.array([[[1, 0, 1, 1, 0, 0, 0, 0, 0, 0]]])
    fpr, pro = pro_curve(maps, masks)
    # thresholds: >0.9 → (0, 1/2·1 = 0.5); 0.85 → (1/7, 0.5); 0.8 → (1/7, 0.5 + 0.5·1/2 = 0.75);
    # 0.1 → (1/7, 1.0); 0.0 → (1, 1)
    assert np.allclose(fpr, [0, 0, 1 / 7, 1 / 7, 1 / 7, 1]) and np.allclose(pro, [0, 0.5, 0.5, 0.75, 1, 1])
    # area up to 0.3: 0.5·(1/7) + 1.0·(0.3 − 1/7) = 0.3 − 0.5/7, over 0.3
    assert aupro(maps, masks) == pytest.approx((0.3 - 0.5 / 7) / 0.3)
    assert aupro(maps, masks, fpr_limit=1.0) == pytest.approx(0.5 / 7 + 6 / 7)


# -- the inspection layout -------------------------------------------------------------------


def _inspection(root: Path, size: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    texture = np.asarray(Image.fromarray(rng.integers(60, 200, (24, 24), dtype=np.uint8)).resize((160, 160)))
    return write_inspection_dataset(root, texture, size=size, train=24, test_good=6, test_defect=3, seed=seed)


def test_the_inspection_layout_loads_with_masks_at_the_image_size(tmp_path: Path) -> None:
    root = _inspection(tmp_path / "parts")
    train = load_dataset(f"mvtec:{root}", "train")
    test = load_dataset(f"folder:{root}", "test")  # recognised under folder: too
    assert train.classes == test.classes == ["good", "missing", "scratch", "spot"]
    assert set(train.labels.tolist()) == {0} and len(train) == 24 and train.masks is None
    assert test.masks is not None and test.masks.shape == (len(test), 48, 48)
    for i, rel in enumerate(test.ids):
        defect = Path(rel).parts[1]
        if defect == "good":
            assert not test.masks[i].any()
        else:
            mask = np.asarray(Image.open(root / "ground_truth" / defect / f"{Path(rel).stem}_mask.png")) > 0
            assert np.array_equal(test.masks[i].numpy() > 0, mask) and mask.any()
    resized = load_dataset(f"mvtec:{root}", "test", image_size=(24, 24))
    assert resized.masks.shape == (len(test), 24, 24) and resized.masks.any()


@pytest.fixture(scope="module")
def inspection_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from convae.cli import main  # noqa: F401 - the CLI path is tested below; train through Python here
    from convae.training import TrainConfig, Trainer

    base = tmp_path_factory.mktemp("inspection")
    root = _inspection(base / "parts")
    cfg = TrainConfig(dataset=f"mvtec:{root}", patch=16, epochs=2, batch_size=32, threads=1, logger="none")
    Trainer(cfg, base / "run", progress=False).fit()
    return root, base / "run"


def test_an_inspection_run_trains_on_good_and_evaluates_per_defect_type(inspection_run, cli) -> None:
    root, run = inspection_run
    config = json.loads((run / "config.json").read_text())
    assert config["training"]["normal_classes"] == [0] and config["model"]["input_shape"] == [1, 16, 16]
    code, out, err = cli("detect", run, "--eval", "--json")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result["auroc_per_anomalous_class"]) == {"missing", "scratch", "spot"}
    assert set(result["pixel_auroc_per_anomalous_class"]) == set(result["aupro_per_anomalous_class"]) == \
        {"missing", "scratch", "spot"}
    assert 0.0 <= result["aupro"] <= 1.0 and 0.0 <= result["pixel_auroc"] <= 1.0
    code, out, err = cli("detect", run, "--eval")
    assert code == 0 and "pixel AUROC" in out and "AUPRO" in out and "scratch" in out
    # the report, show and evaluate take a patch run (its figures are drawn from fixed patches)
    for verb in ("report", "show", "evaluate"):
        code, out, err = cli(verb, run)
        assert code == 0, (verb, err)
    assert (run / "figures" / "detect-gallery.png").is_file() and (run / "report.html").is_file()
    page = (run / "report.html").read_text()
    assert "AUPRO" in page and "<td>scratch</td>" in page


def test_tiled_detect_writes_overlays_and_masks_at_the_image_size(inspection_run, tmp_path: Path, cli) -> None:
    root, run = inspection_run
    rng = np.random.default_rng(5)
    big = np.asarray(Image.fromarray(rng.integers(60, 200, (30, 40), dtype=np.uint8)).resize((200, 150)))
    Image.fromarray(big).save(tmp_path / "big.png")
    code, out, err = cli("detect", run, tmp_path / "big.png", root / "test" / "spot" / "000.png",
                         "--heatmaps", tmp_path / "heat", "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert all(row["score"] is not None for row in rows)
    mask = Image.open(tmp_path / "heat" / "big_mask.png")
    assert mask.size == (200, 150)
    overlay = Image.open(tmp_path / "heat" / "big.png")
    assert overlay.width >= 200 and overlay.height >= 150  # drawn at the image's own resolution, plus the bar


def test_a_patch_denoiser_restores_any_size_at_its_own_size(tmp_path: Path, cli) -> None:
    photos = _photos(tmp_path / "photos", [(40, 56), (64, 48), (40, 40), (36, 70)])
    code, out, err = cli("train", "--dataset", f"folder:{photos}", "--patch", "16", "--task", "denoise",
                         "--model", "conv",  # a dense model: it takes its patch only, so the photo goes in tiles
                         "--noise", "gaussian:0.1", "--epochs", "1", "--threads", "1", "--out", tmp_path / "run",
                         "--no-progress", "--logger", "none")
    assert code == 0, err
    assert "3×16×16 patches of images up to 64×70" in err
    Image.fromarray(smooth_photo(np.random.default_rng(9), 123, 77)).save(tmp_path / "odd.png")
    code, out, err = cli("denoise", tmp_path / "run", tmp_path / "odd.png", "--out", tmp_path / "clean")
    assert code == 0, err
    assert "16×16 tiles at full resolution" in out
    assert Image.open(tmp_path / "clean" / "odd.png").size == (77, 123)
    code, out, err = cli("evaluate", tmp_path / "run", "--json")
    assert code == 0, err
    assert "fixed 16×16 patches" in json.loads(out)["measured_on"]


# -- bad input: one line, exit 2, nothing left behind -------------------------------------------


def _train_fails(cli, tmp_path: Path, dataset: str, *extra: str) -> str:
    out_dir = tmp_path / "never"
    code, out, err = cli("train", "--dataset", dataset, "--epochs", "1", "--out", out_dir, "--no-progress",
                         "--logger", "none", *extra)
    assert code == 2, (out, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and not out_dir.exists()
    return lines[0]


def test_inspection_bad_input_is_one_line(tmp_path: Path, cli) -> None:
    root = _inspection(tmp_path / "a")
    (root / "test" / "spot" / "001.png").unlink()
    line = _train_fails(cli, tmp_path, f"mvtec:{root}", "--patch", "16")
    assert "001_mask.png: mask without an image" in line

    root = _inspection(tmp_path / "b")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / "ground_truth" / "scratch" / "002_mask.png")
    line = _train_fails(cli, tmp_path, f"mvtec:{root}", "--patch", "16")
    assert "002_mask.png: mask is 20×20 (H×W) but its image" in line and "is 48×48" in line

    root = _inspection(tmp_path / "c")
    for file in (root / "train" / "good").iterdir():
        file.unlink()
    line = _train_fails(cli, tmp_path, f"mvtec:{root}", "--patch", "16")
    assert "train/good: empty class folder" in line

    root = _inspection(tmp_path / "d")
    line = _train_fails(cli, tmp_path, f"mvtec:{root}", "--patch", "64")
    assert "smaller than --patch 64" in line and "train/good/" in line

    line = _train_fails(cli, tmp_path, f"mvtec:{tmp_path / 'nothing'}")
    assert "no such folder" in line


def test_defects_are_painted_exactly_where_the_mask_says() -> None:
    rng = np.random.default_rng(0)
    image = np.full((64, 64, 3), 100, np.uint8)
    for kind in ("scratch", "spot", "missing"):
        painted, mask = paint_defect(rng, image, kind)
        changed = (painted != image).any(2)
        assert mask.any() and np.array_equal(changed, mask > 0), kind


def test_inspection_parts_are_what_the_set_saves_and_change_only_inside_their_masks(tmp_path: Path) -> None:
    """The parts benchmarks/inspection_visibility.py measures are the ones write_inspection_dataset writes."""
    picture = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    settings = dict(size=32, train=3, test_good=2, test_defect=2, seed=4, defects=("stain", "blur", "scratch"))
    root = write_inspection_dataset(tmp_path / "set", picture, **settings)
    parts = list(inspection_parts(picture, **settings))
    assert [(split, kind) for split, kind, *_ in parts].count(("train", "good")) == 3 and len(parts) == 11
    for split, kind, index, clean, image, mask in parts:
        saved = np.asarray(Image.open(root / split / kind / f"{index:03d}.png"))
        assert np.array_equal(saved, image), (split, kind, index)
        if mask is None:
            assert np.array_equal(image, clean)
        else:
            changed = (image != clean).any(2)
            assert changed.any() and not (changed & (mask == 0)).any(), kind  # nothing outside the mask changed


# -- larger than memory ------------------------------------------------------------------------


def _load_in_process(args: tuple[str, str, str]) -> str:
    root, cache, budget = args
    import os
    import warnings

    os.environ["CONVAE_CACHE"], os.environ["CONVAE_MEMORY_BUDGET"] = cache, budget
    from convae.data import load_folder as load

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load(root, "train")
    decoded = any("decoding them once" in str(w.message) for w in caught)
    return f"{data.backing}|{int(data.images.sum())}|{decoded}"


def test_a_folder_over_the_memory_budget_is_decoded_once_into_a_shared_mapped_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    root = _photos(tmp_path / "p", [(20, 24)] * 30, seed=2)
    (root / "broken.png").write_bytes(b"not a png")
    monkeypatch.delenv("CONVAE_MEMORY_BUDGET", raising=False)
    with pytest.warns(UserWarning, match="broken.png: skipped"):
        in_memory = load_folder(root, "train")
    assert in_memory.backing is None
    cache = str(tmp_path / "cache")
    # two processes at once, like two torchrun ranks: one decodes, the other waits and maps the same file
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        answers = pool.map(_load_in_process, [(str(root), cache, "1k")] * 2)
    paths = {a.split("|")[0] for a in answers}
    assert len(paths) == 1 and (backing := paths.pop()) != "None"
    assert sorted(a.split("|")[2] for a in answers) == ["False", "True"], answers
    assert {int(a.split("|")[1]) for a in answers} == {int(in_memory.images.sum())}
    monkeypatch.setenv("CONVAE_CACHE", cache)
    monkeypatch.setenv("CONVAE_MEMORY_BUDGET", "1k")
    with pytest.warns(UserWarning, match="broken.png: skipped"):
        mapped = load_folder(root, "train")
    assert mapped.backing == backing and isinstance(mapped.images, torch.Tensor)
    assert torch.equal(mapped.images, in_memory.images) and mapped.ids == in_memory.ids
    assert not [p for p in Path(backing).parent.iterdir() if p.name.endswith(".tmp")]
    part = mapped.subset(torch.tensor([5, 0, 9]))
    assert part.backing not in (None, backing) and torch.equal(part.images, in_memory.images[[5, 0, 9]])


def test_training_reads_batches_from_the_mapped_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli) -> None:
    root = _photos(tmp_path / "p", [(16, 16)] * 40, seed=3)
    monkeypatch.setenv("CONVAE_MEMORY_BUDGET", "2k")
    code, out, err = cli("train", "--dataset", f"folder:{root}", "--epochs", "1", "--val-fraction", "0.2",
                         "--threads", "1", "--out", tmp_path / "run", "--no-progress", "--logger", "none")
    assert code == 0, err
    assert "memory-mapped cache" in err
    from convae.run import Run

    splits = Run.open(tmp_path / "run").splits()
    assert splits.train.backing is not None and splits.val is not None and splits.val.backing is not None
    assert len(splits.train) + len(splits.val) == len(splits.train_all)


def test_a_patch_run_encodes_whole_files_in_tiles_and_decodes_them_back_at_their_size(
        inspection_run, tmp_path: Path, cli) -> None:
    root, run = inspection_run
    rng = np.random.default_rng(4)
    Image.fromarray(rng.integers(60, 200, (37, 51), dtype=np.uint8)).save(tmp_path / "odd.png")
    files = [tmp_path / "odd.png", root / "test" / "good" / "000.png"]
    for suffix in ("cvc", "npz"):
        code, out, err = cli("encode", run, *files, "--out", tmp_path / f"codes.{suffix}", "--bits", "32")
        assert code == 0, err
        # 37×51 in 16×16 tiles: 3 rows × 4 columns; 48×48: 3 × 3
        assert "2 image(s) at full size in 21 tile codes" in out
        code, out, err = cli("decode", run, tmp_path / f"codes.{suffix}", "--out", tmp_path / f"back-{suffix}")
        assert code == 0, err
        assert Image.open(tmp_path / f"back-{suffix}" / "odd.png").size == (51, 37)
        assert Image.open(tmp_path / f"back-{suffix}" / "000.png").size == (48, 48)
    # the decoded tiles are the model's own tiles: with 32-bit codes, the whole image equals
    # the tiles' reconstructions put back in place
    from convae.applications.tiles import assemble, cut_tiles
    from convae.run import Run

    model = Run.open(run).model()
    image = torch.from_numpy(np.asarray(Image.open(files[1])).copy())[None]
    tiles, places = cut_tiles(image, (16, 16))
    with torch.no_grad():
        expected = assemble(model(tiles.float() / 255), places, (48, 48))
    decoded = torch.from_numpy(np.asarray(Image.open(tmp_path / "back-cvc" / "000.png")).astype(np.float32))
    assert (decoded - (expected[0] * 255).round()).abs().max() <= 1


def test_a_resizing_run_draws_its_map_back_on_the_original_image(tmp_path: Path, cli) -> None:
    root = _inspection(tmp_path / "parts")
    code, out, err = cli("train", "--dataset", f"mvtec:{root}", "--image-size", "24", "--epochs", "1", "--threads", "1",
                         "--out", tmp_path / "run", "--no-progress", "--logger", "none")
    assert code == 0, err
    code, out, err = cli("detect", tmp_path / "run", root / "test" / "spot" / "000.png", "--heatmaps", tmp_path / "h")
    assert code == 0, err
    assert Image.open(tmp_path / "h" / "000_overlay_mask.png").size == (48, 48)
    assert Image.open(tmp_path / "h" / "000_overlay.png").width >= 48
    code, out, err = cli("detect", tmp_path / "run", "--eval", "--json")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert "aupro" in result and set(result["aupro_per_anomalous_class"]) == {"missing", "scratch", "spot"}


def test_a_full_disk_while_mapping_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    cli) -> None:
    import errno
    import os

    root = _photos(tmp_path / "p", [(16, 16)] * 12, seed=6)
    monkeypatch.setenv("CONVAE_MEMORY_BUDGET", "1k")
    monkeypatch.setenv("CONVAE_CACHE", str(tmp_path / "cache"))

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    code, out, err = cli("train", "--dataset", f"folder:{root}", "--epochs", "1", "--out", tmp_path / "run",
                         "--no-progress", "--logger", "none")
    assert code == 2 and "cannot write the memory-mapped cache (No space left on device)" in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and not p.name.endswith(".lock")]
