"""Benchmarks (issue 5): RD, Table 1, speed and the README section, on the tiny bundle (no ../shared)."""

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


def _points(name, rates, psnrs):
    return [{"setting": f"s{i}", "bytes": float(r), "psnr": float(p), "ms_ssim": 0.5, "ssim": 0.4}
            for i, (r, p) in enumerate(zip(rates, psnrs))]


def test_winners_and_quality_at_bytes():
    curves = {"ours": _points("ours", [40, 70, 120], [18, 20, 21]),
              "big": _points("big", [90, 200], [25, 30])}
    w = rd.winners(curves, budgets=(64, 96, 128, 30))
    assert w["64"]["winner"] == "ours" and w["64"]["by_codec"]["big"] is None
    assert w["96"]["winner"] == "big" and w["96"]["by_codec"]["ours"]["setting"] == "s1"
    assert w["30"]["winner"] is None
    at = rd.quality_at_bytes(curves["big"], 50)
    assert at["status"] == "below" and at["smallest_bytes"] == 90 and at["value"] is None
    mid = rd.quality_at_bytes(curves["big"], float(np.sqrt(90 * 200)))  # halfway in log-rate
    assert mid["status"] == "interpolated" and mid["value"] == pytest.approx(27.5)


def test_parse_int_list():
    assert rd.parse_int_list("2,3, 5-7", "--bits") == [2, 3, 5, 6, 7]
    with pytest.raises(rd.CodecError):
        rd.parse_int_list("two", "--bits")


def test_table_knows_the_reference_values(tmp_path):
    entries = table.resolve_entries(["airplane", "flowers"], tmp_path)
    assert entries[0]["reference"]["psnr"] == 16.87 and entries[1]["reference"]["ms_ssim"] == 0.7960
    assert entries[1]["data"].endswith("flowers64.npz")
    with pytest.raises(rd.CodecError):
        table.resolve_entries(["boats"], tmp_path)


# --- the CLIs on the tiny bundle ---------------------------------------------------------------

@pytest.fixture(scope="module")
def data16(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "data16.npz"
    np.savez(path, train=synthetic_images(8, 16, 3), val=synthetic_images(6, 16, 4))
    return path


@pytest.fixture(scope="module")
def results(tiny_bundle, data16, tmp_path_factory):
    """Run rd, table and speed once into one results folder."""
    out = tmp_path_factory.mktemp("results")
    assert rd.main(["--model", str(tiny_bundle), "--data", str(data16), "--limit", "4", "--steps", "2",
                    "--bits", "2,3", "--batch", "3", "--out", str(out), "--no-progress"]) == 0
    assert table.main(["--models", f"{tiny_bundle}={data16}", "--limit", "3", "--steps", "1",
                       "--out", str(out), "--no-progress"]) == 0
    assert speed.main(["--model", str(tiny_bundle), "--quick", "--out", str(out), "--no-progress"]) == 0
    return out


def test_rd_writes_json_md_png(results, tiny_bundle):
    name = json.loads((tiny_bundle / "manifest.json").read_text()).get("name", tiny_bundle.name)
    r = json.loads((results / f"rd_{name}.json").read_text())
    assert (results / f"rd_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (results / f"rd_{name}.md").read_text()
    assert "Winner at a byte budget" in md and "Bjøntegaard" in md
    assert r["data"]["n_images"] == 4 and r["settings"]["bits"] == [2, 3]
    ours = r["curves"][rd.OURS]
    assert [p["param"] for p in ours] == [2, 3]
    for p in ours:
        assert p["n"] == 4 and len(p["per_image"]["bytes"]) == 4
        assert all(isinstance(b, int) and b >= 5 for b in p["per_image"]["bytes"])
        assert p["bytes"] == pytest.approx(np.mean(p["per_image"]["bytes"]))
        assert 0 < p["psnr"] < 100 and -1 <= p["ms_ssim"] <= 1
    assert ours[1]["bytes"] >= ours[0]["bytes"]  # one more bit per value costs bytes
    assert "JPEG" in r["curves"] and len(r["curves"]["JPEG"]) > 10
    assert set(r["budgets"]) == {"64", "96", "128"}
    assert set(r["bd"]) == set(r["curves"]) - {rd.OURS}
    assert all(len(v) == 2 for v in r["equal_bytes"].values())


def test_rd_matches_the_codec(results, tiny_bundle, data16):
    """The RD numbers are those of real files: re-encoding one image gives the same bytes and PSNR."""
    from runtime import metrics
    from runtime.codec import Codec

    name = json.loads((tiny_bundle / "manifest.json").read_text()).get("name", tiny_bundle.name)
    point = json.loads((results / f"rd_{name}.json").read_text())["curves"][rd.OURS][0]
    codec = Codec(str(tiny_bundle))
    images = rd.load_split(data16, 16, "val", 3)
    res = codec.encode_detailed(list(images), bits=2, steps=2)
    assert [r.num_bytes for r in res] == point["per_image"]["bytes"][:3]
    decoded = np.stack([codec.decode(r.data) for r in res])
    assert np.allclose(metrics.psnr(decoded, images), point["per_image"]["psnr"][:3], atol=1e-4)


def test_rd_user_errors(tiny_bundle, data16, tmp_path, capsys):
    base = ["--model", str(tiny_bundle), "--data", str(data16), "--out", str(tmp_path), "--no-progress"]
    assert rd.main(base + ["--bits", "1,2"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert rd.main(base + ["--codecs", "GIF"]) == 2
    assert rd.main(["--model", str(tmp_path / "nope"), "--data", str(data16), "--out", str(tmp_path)]) == 2
    assert rd.main(["--model", str(tiny_bundle), "--data", str(tmp_path / "none.npz"), "--out", str(tmp_path)]) == 2
    assert not list(tmp_path.glob("rd_*"))


def test_table(results, tiny_bundle, capsys, tmp_path):
    t = json.loads((results / "table.json").read_text())
    (row,) = t["rows"]
    assert row["n_images"] == 3 and row["reference"] is None and row["steps"] == 1
    assert row["bits"] == json.loads((tiny_bundle / "manifest.json").read_text())["quantization"]["bits"]
    for key in ("l1", "mse", "psnr", "ssim", "ms_ssim", "bytes"):
        assert np.isfinite(row[key])
    assert row["l1"] > 0 and "MS-SSIM (ref)" in (results / "table.md").read_text()
    assert table.main(["--models", "boats", "--out", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_speed(results):
    s = json.loads((results / "speed.json").read_text())
    assert s["decode"]["generate_batch1"]["p50_ms"] > 0 and s["decode"]["codec_decode_batch1"]["p95_ms"] > 0
    assert s["decode"]["throughput"]["images_per_s"] > 0
    assert {(e["batch"], e["steps"]) for e in s["encode"]} == {(1, 0), (1, 2), (4, 0), (4, 2)}
    assert s["memory"]["total_peak_rss_mb"] >= s["memory"]["decode_peak_rss_mb"] > 0
    assert s["flops"]["flops"] == 2 * s["flops"]["macs"] > 0 and "Conv" in s["flops"]["by_op"]
    assert "JPEG" in s["classic"] and "WebP" in s["classic"]
    assert "Arithmetic" in (results / "speed.md").read_text()


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
    assert "Winner per byte budget" in text and ".png)" in text and "MS-SSIM (ref)" in text and "### Speed" in text
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


def test_effort(tiny_bundle, data16, tmp_path):
    from benchmarks import effort

    assert effort.main(["--model", str(tiny_bundle), "--data", str(data16), "--limit", "3", "--steps", "0,2",
                        "--out", str(tmp_path)]) == 0
    name = json.loads((tiny_bundle / "manifest.json").read_text()).get("name", tiny_bundle.name)
    result = json.loads((tmp_path / f"effort_{name}.json").read_text())
    settings = [r["setting"] for r in result["rows"]]
    assert settings == ["E(x) only", "0 steps", "2 steps"]
    assert all(r["bytes"] > 0 and r["psnr"] > 0 for r in result["rows"])
