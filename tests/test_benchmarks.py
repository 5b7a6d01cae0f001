"""Benchmarks (issues 5, 11): per-image budget RD, Table 1, speed, effort and the README section, on
the tiny bundle (no ../shared)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import rd, readme, speed, table
from tests.conftest import synthetic_images

# --- Bjøntegaard and point selection on synthetic curves (no model) -----------------------------

RATES = np.array([40.0, 60.0, 95.0, 150.0, 240.0, 380.0])
PSNRS = np.array([18.0, 20.5, 23.0, 25.2, 27.1, 28.6])


def test_bd_rate_of_a_curve_shifted_by_minus_ten_percent():
    assert rd.bd_rate(RATES, PSNRS, RATES * 0.9, PSNRS) == pytest.approx(-10.0, abs=1e-6)
    assert rd.bd_rate(RATES, PSNRS, RATES * 1.25, PSNRS) == pytest.approx(25.0, abs=1e-6)
    assert rd.bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)


def test_bd_quality_of_a_curve_shifted_by_one_db():
    assert rd.bd_quality(RATES, PSNRS, RATES, PSNRS + 1.0) == pytest.approx(1.0, abs=1e-6)
    # a cheaper codec at equal quality is better at equal rate too
    assert rd.bd_quality(RATES, PSNRS, RATES * 0.9, PSNRS) > 0


def test_bd_over_partial_overlap_and_no_overlap():
    # the test curve covers only the upper part of the anchor's range (fewer points, lower-degree
    # fit): still about -10 %
    assert rd.bd_rate(RATES, PSNRS, RATES[3:] * 0.9, PSNRS[3:]) == pytest.approx(-10.0, abs=0.5)
    # disjoint quality ranges / rate ranges: no BD figure
    assert rd.bd_rate(RATES, PSNRS, RATES, PSNRS + 20) is None
    assert rd.bd_quality(RATES, PSNRS, RATES * 100, PSNRS) is None


def test_rd_front_drops_dominated_points():
    r, q = rd.rd_front([100, 50, 80, 120, 80], [30, 20, 19, 29, 25])
    assert r.tolist() == [50, 80, 100] and q.tolist() == [20, 25, 30]


def test_cached_encodings_search_like_the_codec():
    """The budget search over the per-image cache finds what WEBP.best_fitting finds, encoding each
    quality at most once."""
    from runtime.classic import WEBP

    image = synthetic_images(1, 32, 7)[0]
    cache = rd.CachedEncodings(WEBP, image)
    for budget in (60, 90, 150):
        found = cache.best_fitting(lambda d, b=budget: len(d) <= b)
        direct = WEBP.best_fitting(image, lambda d, b=budget: len(d) <= b)
        assert (found is None) == (direct is None) and (found is None or found == direct)
    assert len(cache.files) <= 3 * 7
    assert cache.best_fitting(lambda d: len(d) <= 5) is None


def test_best_of_avif_and_jxl_takes_the_better_file_per_image():
    """Per image the higher PSNR of AVIF and JPEG XL among the files that fit (NaN: does not fit),
    means over the images where one fits, ours on the same images."""
    nan = np.nan
    entries = {"AVIF": {"per_image": {"psnr": np.array([30.0, nan, 25.0, nan]), "ms_ssim": np.array([0.9, nan, 0.8, nan]),
                                      "bytes": np.array([100.0, nan, 90.0, nan])}},
               "JPEG XL": {"per_image": {"psnr": np.array([28.0, 31.0, 26.0, nan]),
                                         "ms_ssim": np.array([0.95, 0.93, 0.7, nan]),
                                         "bytes": np.array([95.0, 99.0, 80.0, nan])}}}
    ours = {"psnr": np.array([29.0, 33.0, 27.0, 20.0]), "ms_ssim": np.array([0.9, 0.9, 0.9, 0.5])}
    b = rd.best_of_at_budget(entries, ours, 100)
    assert b["fits"] == 3 and b["wins"] == {"AVIF": 1, "JPEG XL": 2}
    assert b["psnr"] == pytest.approx((30 + 31 + 26) / 3) and b["bytes"] == pytest.approx((100 + 99 + 80) / 3)
    assert b["ms_ssim"] == pytest.approx((0.95 + 0.93 + 0.8) / 3)
    assert b["ours_psnr"] == pytest.approx((29 + 33 + 27) / 3)
    assert b["delta_psnr"] == pytest.approx(b["ours_psnr"] - b["psnr"])
    assert rd.best_of_at_budget({"WebP": entries["AVIF"]}, ours, 100) is None


def test_parse_int_list():
    assert rd.parse_int_list("40, 51, 60-62", "--budgets") == [40, 51, 60, 61, 62]
    with pytest.raises(rd.CodecError):
        rd.parse_int_list("two", "--budgets")


def test_table_knows_the_reference_values(tmp_path):
    entries = table.resolve_entries(["airplane", "flowers"], tmp_path)
    assert entries[0]["reference"]["psnr"] == 16.87 and entries[1]["reference"]["ms_ssim"] == 0.7960
    assert entries[1]["data"].endswith("flowers64.npz")
    with pytest.raises(rd.CodecError):
        table.resolve_entries(["boats"], tmp_path)


# --- the CLIs on the tiny bundle ---------------------------------------------------------------

BUDGETS = (30, 200)


@pytest.fixture(scope="module")
def data16(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "data16.npz"
    np.savez(path, train=synthetic_images(8, 16, 3), val=synthetic_images(6, 16, 4))
    return path


@pytest.fixture(scope="module")
def results(tiny_bundle, data16, tmp_path_factory):
    """Run rd, table, speed and effort once into one results folder."""
    from benchmarks import effort

    out = tmp_path_factory.mktemp("results")
    assert rd.main(["--model", str(tiny_bundle), "--data", str(data16), "--limit", "4", "--steps", "2",
                    "--budgets", ",".join(map(str, BUDGETS)), "--levels", "0,16", "--batch", "3",
                    "--out", str(out), "--no-progress"]) == 0
    assert table.main(["--models", f"{tiny_bundle}={data16}", "--limit", "3", "--steps", "1",
                       "--out", str(out), "--no-progress"]) == 0
    assert speed.main(["--model", str(tiny_bundle), "--quick", "--out", str(out), "--no-progress"]) == 0
    assert effort.main(["--model", str(tiny_bundle), "--data", str(data16), "--limit", "3", "--steps", "0,2",
                        "--target-bytes", "30", "--out", str(out)]) == 0
    return out


def _name(bundle):
    return json.loads((bundle / "manifest.json").read_text()).get("name", bundle.name)


def test_rd_writes_json_md_png(results, tiny_bundle):
    r = json.loads((results / f"rd_{_name(tiny_bundle)}.json").read_text())
    assert (results / f"rd_{_name(tiny_bundle)}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (results / f"rd_{_name(tiny_bundle)}.md").read_text()
    assert "Per-image byte budgets" in md and "Bjøntegaard" in md and "fallback=False" in md
    assert r["data"]["n_images"] == 4 and r["settings"]["budgets"] == list(BUDGETS)
    assert r["settings"]["fallback"] is False and r["settings"]["levels"] == [0, 16]
    assert [row["budget"] for row in r["budgets"]] == list(BUDGETS)
    for row in r["budgets"]:
        o = row["ours"]
        assert o["n"] == 4 and len(o["per_image"]["bytes"]) == 4
        assert all(isinstance(b, int) and b >= 3 for b in o["per_image"]["bytes"])
        assert o["bytes"] == pytest.approx(np.mean(o["per_image"]["bytes"]))
        assert 0 < o["psnr"] < 100 and -1 <= o["ms_ssim"] <= 1
        assert row["ours_over_budget"] == sum(b > row["budget"] for b in o["per_image"]["bytes"])
        assert 0 <= row["fallback_would_switch"] <= 4 and 0 <= row["webp_fits"] <= 4
        if row["webp"] is not None:  # WebP's means are over the images it fits, ours given on the same ones
            assert row["webp"]["n"] == row["webp_fits"] == row["ours_on_webp_subset"]["n"]
            assert row["webp"]["bytes_max"] <= row["budget"]
            assert row["delta_psnr"] == pytest.approx(row["ours_on_webp_subset"]["psnr"] - row["webp"]["psnr"])
    small, big = r["budgets"]
    assert small["webp_fits"] == 0 and small["webp"] is None  # no WebP file of a 16x16 image is ≤ 30 B
    assert big["webp_fits"] == 4 and big["ours"]["bytes"] >= small["ours"]["bytes"]
    assert [p["param"] for p in r["curves"][rd.OURS]] == list(BUDGETS)
    assert [p["param"] for p in r["curves"][f"{rd.OURS} levels"]] == [0, 16]
    assert "JPEG" in r["curves"] and len(r["curves"]["WebP"]) == 101
    assert "WebP budgets" in r["bd"] and r["bd"]["WebP budgets"]["budgets"] == [200]
    for row in r["budgets"]:  # every swept classic codec at every budget, WebP's the same as the WebP row
        assert set(row["classic"]) == set(r["settings"]["classic"])
        assert row["classic"]["WebP"]["fits"] == row["webp_fits"]
        for name, e in row["classic"].items():
            assert e["point"] is None or (e["point"]["n"] == e["fits"] and e["point"]["bytes_max"] <= row["budget"])
            if name != "WebP":
                assert f"{name} budgets" in r["bd"]
        if {"AVIF", "JPEG XL"} & set(row["classic"]):
            b = row["best_avif_jxl"]
            assert b["fits"] >= max(row["classic"][n]["fits"] for n in b["codecs"])
            same = [row["classic"][n]["point"]["psnr"] for n in b["codecs"]
                    if row["classic"][n]["point"] is not None and row["classic"][n]["fits"] == b["fits"]]
            assert b["psnr"] is None or b["psnr"] >= max(same, default=-1.0) - 1e-9
    assert "Every classic codec at the same budgets" in md
    assert {"JPEG sweep", "WebP sweep"} <= set(r["bd"])


def test_rd_budgets_are_the_codec_and_webp_files(results, tiny_bundle, data16):
    """The numbers are those of real files: re-encoding gives the same bytes and PSNR; WebP's are its
    highest quality that fits."""
    from runtime import metrics
    from runtime.classic import WEBP
    from runtime.codec import Codec

    r = json.loads((results / f"rd_{_name(tiny_bundle)}.json").read_text())
    row = r["budgets"][1]
    codec = Codec(str(tiny_bundle))
    images = rd.load_split(data16, 16, "val", 4)
    res = codec.compress(list(images), target_bytes=row["budget"], fallback=False, steps=2)
    assert [x.num_bytes for x in res] == row["ours"]["per_image"]["bytes"]
    assert [x.level for x in res] == row["ours"]["per_image"]["level"]
    assert all(x.kind == "latent" for x in res)
    decoded = np.stack([codec.decompress(x.data) for x in res])
    assert np.allclose(metrics.psnr(decoded, images), row["ours"]["per_image"]["psnr"], atol=1e-4)
    for i, q, b in zip(row["webp"]["images"], row["webp"]["qualities"], row["webp"]["per_image"]["bytes"]):
        assert len(WEBP.encode(images[i], q)) == b <= row["budget"]
        assert q == 100 or len(WEBP.encode(images[i], q + 1)) > row["budget"]


def test_rd_user_errors(tiny_bundle, data16, tmp_path, capsys):
    base = ["--model", str(tiny_bundle), "--data", str(data16), "--out", str(tmp_path), "--no-progress"]
    assert rd.main(base + ["--budgets", "0,40"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert rd.main(base + ["--levels", "99"]) == 2
    assert rd.main(base + ["--codecs", "GIF"]) == 2
    assert rd.main(base + ["--steps", "-1"]) == 2
    assert rd.main(["--model", str(tmp_path / "nope"), "--data", str(data16), "--out", str(tmp_path)]) == 2
    assert rd.main(["--model", str(tiny_bundle), "--data", str(tmp_path / "none.npz"), "--out", str(tmp_path)]) == 2
    assert not list(tmp_path.glob("rd_*"))


def test_table(results, capsys, tmp_path):
    t = json.loads((results / "table.json").read_text())
    (row,) = t["rows"]
    assert row["n_images"] == 3 and row["reference"] is None and row["steps"] == 1
    assert row["target_bytes"] == table.TARGET_BYTES == 55 and row["bytes_max"] <= 55
    for key in ("l1", "mse", "psnr", "ssim", "ms_ssim", "bytes"):
        assert np.isfinite(row[key])
    assert row["l1"] > 0 and "MS-SSIM (ref)" in (results / "table.md").read_text()
    assert table.main(["--models", "boats", "--out", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_speed(results):
    s = json.loads((results / "speed.json").read_text())
    d = s["decode"]
    assert d["generate_batch1"]["p50_ms"] > 0 and d["codec_decode_batch1"]["p95_ms"] > 0
    assert d["entropy_decode_us_per_file"] > 0 and d["throughput"]["images_per_s"] > 0
    assert {(e["batch"], e["steps"]) for e in s["encode"]} == {(1, 0), (1, 2), (4, 0), (4, 2)}
    assert s["memory"]["total_peak_rss_mb"] >= s["memory"]["decode_peak_rss_mb"] > 0
    assert s["flops"]["flops"] == 2 * s["flops"]["macs"] > 0 and "Conv" in "".join(s["flops"]["by_op"])
    assert "JPEG" in s["classic"] and "WebP" in s["classic"]
    assert "Arithmetic" in (results / "speed.md").read_text()


def test_effort(results, tiny_bundle):
    result = json.loads((results / f"effort_{_name(tiny_bundle)}.json").read_text())
    assert [(r["mode"], r["encoder"], r["steps"]) for r in result["rows"]] == [
        ("level", "base", 0), ("level", "full", 0), ("level", "full", 2),
        ("budget", "base", 0), ("budget", "full", 0), ("budget", "full", 2)]
    assert all(r["bytes"] > 0 and r["psnr"] > 0 and r["ms_per_image"] > 0 for r in result["rows"])
    assert all(r["bytes_max"] <= 30 for r in result["rows"] if r["mode"] == "budget")


def test_onnx_macs_of_a_known_graph(tmp_path):
    """MatMul (1×8 @ 8×12) + Conv 3×3, 12→4 channels over 6×6 (padded): 96 + 6·6·4·12·9 MACs."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w1 = numpy_helper.from_array(np.zeros((8, 12), np.float32), "w1")
    w2 = numpy_helper.from_array(np.zeros((4, 12, 3, 3), np.float32), "w2")
    shape = numpy_helper.from_array(np.array([-1, 12, 1, 1], np.int64), "shape")
    nodes = [helper.make_node("MatMul", ["z", "w1"], ["h"]),
             helper.make_node("Reshape", ["h", "shape"], ["h4"]),
             helper.make_node("Tile", ["h4", "reps"], ["t"]),
             helper.make_node("Conv", ["t", "w2"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    reps = numpy_helper.from_array(np.array([1, 1, 6, 6], np.int64), "reps")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[w1, w2, shape, reps])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    macs = speed.onnx_macs(path)
    assert macs["by_op"] == {"MatMul": 96, "Conv": 6 * 6 * 4 * 12 * 9}
    assert macs["flops"] == 2 * (96 + 6 * 6 * 4 * 12 * 9)


def test_readme_section(results, tmp_path, capsys):
    doc = tmp_path / "README.md"
    doc.write_text("# T\n\nbefore\n\n<!-- results:start -->\nold text\n<!-- results:end -->\n\nafter\n")
    assert readme.main(["--readme", str(doc), "--results", str(results)]) == 0
    text = doc.read_text()
    assert "old text" not in text and text.startswith("# T\n\nbefore\n") and text.endswith("after\n")
    assert "WebP fits" in text and ".png)" in text and "MS-SSIM (ref)" in text and "### Speed" in text
    assert "Encode effort" in text and "entropy decode" in text
    assert readme.main(["--readme", str(doc), "--results", str(results), "--check"]) == 0
    assert readme.main(["--readme", str(doc), "--results", str(results)]) == 0
    assert doc.read_text() == text  # idempotent
    assert readme.main(["--readme", str(doc), "--results", str(tmp_path / "empty"), "--check"]) == 1
    assert doc.read_text() == text
    plain = tmp_path / "PLAIN.md"
    plain.write_text("# no markers\n")
    capsys.readouterr()
    assert readme.main(["--readme", str(plain), "--results", str(results)]) == 0
    assert plain.read_text() == "# no markers\n" and "markers" in capsys.readouterr().err


def test_time_to_quality_measures_snapshots_against_a_reference(tiny_run, tiny_bundle, tiny_npz, tmp_path):
    """benchmarks.time_to_quality: the run's estimate curve from val.csv, a snapshot and the final
    selection exported and measured as files, beside the reference; JSON, Markdown and a plot."""
    import shutil

    from benchmarks.time_to_quality import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.copytree(run / "best", run / "snapshots" / "t000001")
    assert main(["--run", str(run), "--reference", str(tiny_bundle), "--data", str(tiny_npz), "--budgets", "40,80",
                 "--limit", "4", "--steps", "0", "--out", str(tmp_path), "--stem", "ttq"]) == 0
    result = json.loads((tmp_path / "ttq.json").read_text())
    assert [p["snapshot"] for p in result["points"]] == ["t000001", "final"]
    assert len(result["estimate"]) == 2 and result["estimate"][-1]["step"] == 40
    for p in result["points"]:  # the same weights as the reference: the same files
        for b in ("40", "80"):
            assert p["files"][b]["bytes"] <= int(b)
            assert p["delta"][b] == pytest.approx(0.0, abs=0.05)
    assert (tmp_path / "ttq.md").exists() and (tmp_path / "ttq.png").exists()


def test_compare_bundles(tiny_bundle, tiny_npz, tmp_path):
    """benchmarks.compare: every bundle's files fit each budget, written as JSON and Markdown."""
    from benchmarks.compare import main

    assert main(["--models", f"{tiny_bundle},{tiny_bundle}", "--data", str(tiny_npz), "--limit", "4",
                 "--budgets", "30,60,90", "--steps", "0", "--out", str(tmp_path), "--stem", "cmp"]) == 0
    r = json.loads((tmp_path / "cmp.json").read_text())
    row = r["rows"][str(tiny_bundle)]
    assert [p["budget"] for p in row["points"]] == [30, 60, 90]
    assert all(p["bytes"] <= p["budget"] for p in row["points"])
    assert (tmp_path / "cmp.md").exists()
