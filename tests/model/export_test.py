#!/usr/bin/env python3
"""Tests of tools/export_s3gen.py on the tiny configuration (CPU, ~1-2 min).

Run: .venv/bin/python tests/model/export_test.py

One random-init export is shared by the tests; a tiny checkpoint in the
released key layout is written next to it for the checkpoint-path tests.
TurboExportTest does the same for --variant turbo (one more tiny export).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
sys.path.insert(0, TOOLS)

import safetensors.torch  # noqa: E402
import torch  # noqa: E402

import export_s3gen  # noqa: E402
from s3gen import artifacts, reference, wrappers  # noqa: E402
from s3gen import model as s3model  # noqa: E402

SEED = 3
MODULES = ("encoder", "estimator", "hift_source", "hift_decode")


def run_export(*args):
    """Runs the exporter as users do, in a subprocess (exit codes are part of its contract)."""
    return subprocess.run([sys.executable, os.path.join(TOOLS, "export_s3gen.py"), *args],
                          capture_output=True, text=True, timeout=170)


def load_traced(root):
    return {n: torch.jit.load(os.path.join(root, n + ".pt")) for n in MODULES}


class ExportTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="export_test_")
        cls.out = os.path.join(cls.tmp, "tiny")
        cls.result = run_export("--random-init", "--seed", str(SEED), "--size", "tiny",
                                "--out", cls.out)
        # The same weights, in the layout of the released s3gen.safetensors.
        model = s3model.build("tiny", SEED)
        cls.state = artifacts.released_state_dict(model)
        cls.state["tokenizer._mel_filters"] = torch.randn(128, 201)
        cls.state["speaker_encoder.head.weight"] = torch.randn(4, 4)
        cls.checkpoint = os.path.join(cls.tmp, "s3gen.safetensors")
        safetensors.torch.save_file(cls.state, cls.checkpoint)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def assert_export_ok(self, result):
        self.assertEqual(result.returncode, 0, result.stdout[-3000:] + result.stderr[-3000:])

    def test_random_init_export_verifies_and_reproduces_golden(self):
        self.assert_export_ok(self.result)
        manifest = artifacts.verify_manifest(self.out)
        self.assertEqual((manifest["size"], manifest["source"], manifest["seed"],
                          manifest["device"]), ("tiny", "random-init", SEED, "cpu"))
        self.assertEqual((manifest["variant"], manifest["n_timesteps"], manifest["cfg_rate"],
                          manifest["t_schedule"]), ("standard", 10, 0.7, "cosine"))
        self.assertEqual(manifest["estimator_inputs"], ["x", "mask", "mu", "t", "spks", "cond"])
        self.assertEqual(manifest["voices"], ["voices/alice.pt", "voices/bob.pt"])
        for name in [m + ".pt" for m in MODULES] + ["buffers.pt", "golden/cases.json"]:
            self.assertIn(name, manifest["files"])
        buffers = artifacts.load_bag(os.path.join(self.out, "buffers.pt"))
        self.assertEqual(tuple(buffers["flow_noise"].shape), (80, 15000))
        self.assertEqual(tuple(buffers["hift_noise"].shape), (9, 240000))

        with open(os.path.join(self.out, "golden", "cases.json")) as f:
            cases = json.load(f)["cases"]
        self.assertGreaterEqual(len(cases), 4)
        self.assertEqual({c["finalize"] for c in cases}, {True, False})
        self.assertEqual({c["voice"] for c in cases}, {"alice", "bob"})
        self.assertTrue(any(c["context_tokens"] > 0 and c["noise_offset"] > 0 for c in cases))
        jobs = []
        for c in cases:
            bag = artifacts.load_bag(os.path.join(self.out, "golden", c["name"] + ".pt"))
            voice = artifacts.load_bag(os.path.join(self.out, "voices", c["voice"] + ".pt"))
            self.assertEqual(bag["tokens"].numel(), c["tokens_len"])
            self.assertEqual(bag["wav"].numel(), 480 * bag["mel"].shape[1])
            jobs.append(dict(c, voice=voice, **bag))
        # A batch composition the exporter's own self-check did not use.
        mods = load_traced(self.out)
        for batch in (jobs[::-1][:3], jobs[3:]):
            for job, (mel, wav) in zip(batch, reference.run_traced(mods, buffers, batch)):
                self.assertLess(reference.rel_l2(mel, job["mel"]), 1e-4, job["name"])
                self.assertLess(reference.rel_l2(wav, job["wav"]), 1e-4, job["name"])

    def test_manifest_detects_changed_file(self):
        self.assert_export_ok(self.result)
        copy = os.path.join(self.tmp, "tampered")
        shutil.copytree(self.out, copy)
        with open(os.path.join(copy, "voices", "bob.pt"), "ab") as f:
            f.write(b"\0")
        with self.assertRaisesRegex(ValueError, "voices/bob.pt"):
            artifacts.verify_manifest(copy)

    def test_refuses_existing_export_without_force(self):
        self.assert_export_ok(self.result)
        result = run_export("--random-init", "--size", "tiny", "--out", self.out)
        self.assertEqual(result.returncode, 2)
        self.assertIn("--force", result.stderr)

    def test_checkpoint_export_matches_random_init_export(self):
        self.assert_export_ok(self.result)
        self.assertIn("mel2wav.conv_pre.parametrizations.weight.original0", self.state)
        conds = os.path.join(self.tmp, "conds.pt")
        torch.save({"t3": {"speaker_emb": torch.randn(1, 256)},
                    "gen": {"prompt_token": torch.randint(0, 6561, (1, 30)),
                            "prompt_token_len": torch.tensor([30]),
                            "prompt_feat": torch.randn(1, 61, 80), "prompt_feat_len": None,
                            "embedding": torch.randn(1, 192)}}, conds)
        out = os.path.join(self.tmp, "from_checkpoint")
        result = run_export("--checkpoint", self.checkpoint, "--size", "tiny", "--conds", conds,
                            "--golden", "--out", out)
        self.assert_export_ok(result)
        self.assertIn("ignored 2 tokenizer/speaker_encoder tensors", result.stdout)
        manifest = artifacts.verify_manifest(out)
        self.assertEqual(manifest["source"], "checkpoint")
        self.assertEqual(manifest["checkpoint"]["sha256"], artifacts.sha256_file(self.checkpoint))
        self.assertEqual(manifest["voices"], ["voices/default.pt"])
        voice = artifacts.load_bag(os.path.join(out, "voices", "default.pt"))
        self.assertEqual(tuple(voice["prompt_token"].shape), (30,))
        self.assertEqual(tuple(voice["prompt_feat"].shape), (60, 80))
        self.assertEqual(tuple(voice["embedding"].shape), (192,))

        # Same weights, so the traced modules agree with the random-init export's.
        a, b = load_traced(self.out), load_traced(out)
        g = torch.Generator().manual_seed(1)
        tokens = torch.randint(0, 6561, (2, 29), generator=g)
        lens, emb = torch.tensor([29, 17]), torch.randn(2, 192, generator=g)
        est = [torch.randn(4, 80, 45, generator=g), torch.ones(4, 1, 45),
               torch.randn(4, 80, 45, generator=g), torch.rand(4, generator=g),
               torch.randn(4, 80, generator=g), torch.randn(4, 80, 45, generator=g)]
        mel = torch.randn(1, 80, 21, generator=g) - 5
        phase, noise = torch.rand(1, 9, 1, generator=g), torch.randn(1, 9, 480 * 21, generator=g)
        with torch.no_grad():
            for x, y in zip(a["encoder"](tokens, lens, emb), b["encoder"](tokens, lens, emb)):
                torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
            torch.testing.assert_close(a["estimator"](*est), b["estimator"](*est), rtol=0, atol=1e-6)
            source = a["hift_source"](mel, phase, noise)
            torch.testing.assert_close(source, b["hift_source"](mel, phase, noise), rtol=0, atol=1e-6)
            torch.testing.assert_close(a["hift_decode"](mel, source), b["hift_decode"](mel, source),
                                       rtol=0, atol=1e-6)

    def test_truncated_checkpoint_exits_2(self):
        with open(self.checkpoint, "rb") as f:
            data = f.read()
        cut = os.path.join(self.tmp, "cut.safetensors")
        with open(cut, "wb") as f:
            f.write(data[:len(data) // 2])
        result = run_export("--checkpoint", cut, "--size", "tiny",
                            "--out", os.path.join(self.tmp, "cut"))
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn(f"cannot read checkpoint {cut}", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_checkpoint_missing_flow_key_exits_2(self):
        state = dict(self.state)
        del state["flow.encoder_proj.weight"]
        path = os.path.join(self.tmp, "missing.pt")
        torch.save(state, path)
        result = run_export("--checkpoint", path, "--size", "tiny",
                            "--out", os.path.join(self.tmp, "missing"))
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("missing keys 1: flow.encoder_proj.weight", result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "missing")))

    def test_traced_modules_run_at_unseen_batch_and_length(self):
        """Trace shapes are (2,37)/(4,64)/(1,12) and the exporter checks (3,53)/(6,97)/(2,17);
        here B=5, L=71 etc. against the eager official model with the same seed."""
        self.assert_export_ok(self.result)
        model = s3model.build("tiny", SEED)
        s3model.fold_weight_norms(model)
        model.eval()
        eager = {"encoder": wrappers.Encoder(model.flow),
                 "estimator": wrappers.Estimator(model.flow.decoder.estimator),
                 "hift_source": wrappers.HiftSource(model.mel2wav),
                 "hift_decode": wrappers.HiftDecode(model.mel2wav)}
        traced = load_traced(self.out)
        g = torch.Generator().manual_seed(2)
        lens = torch.tensor([71, 5, 64, 33, 70])
        tokens = torch.randint(0, 6561, (5, 71), generator=g) * (torch.arange(71) < lens[:, None])
        emb = torch.randn(5, 192, generator=g)
        mask = (torch.arange(131) < torch.tensor([131, 90, 7])[:, None]).float()[:, None]
        est = (torch.randn(3, 80, 131, generator=g), mask, torch.randn(3, 80, 131, generator=g),
               torch.rand(3, generator=g), torch.randn(3, 80, generator=g),
               torch.randn(3, 80, 131, generator=g))
        mel = torch.randn(3, 80, 23, generator=g) - 5
        phase = torch.rand(3, 9, 1, generator=g) * 6 - 3
        phase[:, 0] = 0
        noise = torch.randn(3, 9, 480 * 23, generator=g)
        with torch.no_grad():
            mu, spks = traced["encoder"](tokens, lens, emb)
            self.assertEqual(tuple(mu.shape), (5, 80, 142))
            for x, y in zip((mu, spks), eager["encoder"](tokens, lens, emb)):
                torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
            # Padding is masked: a short row of the batch equals the row alone.
            alone, _ = traced["encoder"](tokens[3:4, :33], lens[3:4], emb[3:4])
            torch.testing.assert_close(mu[3:4, :, :66], alone, rtol=0, atol=1e-4)
            v = traced["estimator"](*est)
            self.assertEqual(tuple(v.shape), (3, 80, 131))
            torch.testing.assert_close(v, eager["estimator"](*est), rtol=0, atol=1e-5)
            source = traced["hift_source"](mel, phase, noise)
            self.assertEqual(tuple(source.shape), (3, 1, 480 * 23))
            torch.testing.assert_close(source, eager["hift_source"](mel, phase, noise),
                                       rtol=0, atol=1e-5)
            wav = traced["hift_decode"](mel, source)
            self.assertEqual(tuple(wav.shape), (3, 480 * 23))
            self.assertLessEqual(float(wav.abs().max()), 0.99)
            torch.testing.assert_close(wav, eager["hift_decode"](mel, source), rtol=0, atol=1e-5)


class TurboExportTest(unittest.TestCase):
    """--variant turbo: Chatterbox Turbo's meanflow decoder (one tiny export, ~10 s)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="export_turbo_test_")
        cls.out = os.path.join(cls.tmp, "turbo")
        cls.result = run_export("--variant", "turbo", "--random-init", "--seed", str(SEED),
                                "--size", "tiny", "--out", cls.out)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.assertEqual(self.result.returncode, 0,
                         self.result.stdout[-3000:] + self.result.stderr[-3000:])

    def official(self):
        """The official modules with the export's weights, weight norms folded, eager."""
        model = s3model.build("tiny", SEED, "turbo")
        s3model.fold_weight_norms(model)
        return model.eval()

    def test_manifest_records_the_turbo_sampler(self):
        manifest = artifacts.verify_manifest(self.out)
        self.assertEqual((manifest["variant"], manifest["n_timesteps"], manifest["cfg_rate"],
                          manifest["t_schedule"]), ("turbo", 2, 0.0, "linear"))
        self.assertEqual(manifest["estimator_inputs"],
                         ["x", "mask", "mu", "t", "spks", "cond", "r"])
        self.assertTrue(manifest["architecture"]["estimator"]["meanflow"])
        with open(os.path.join(self.out, "golden", "cases.json")) as f:
            cases = json.load(f)["cases"]
        self.assertEqual({c["n_timesteps"] for c in cases}, {2})
        # The exporter's self-check ran on the traced turbo modules and passed.
        pairs = re.findall(r"self-check \S+: .* rel L2 mel (\S+), wav (\S+)", self.result.stdout)
        errors = [float(e) for pair in pairs for e in pair]
        self.assertEqual(len(errors), 2 * len(cases), self.result.stdout[-2000:])
        self.assertLess(max(errors), 1e-4)

    def test_traced_estimator_takes_r_per_row(self):
        traced = torch.jit.load(os.path.join(self.out, "estimator.pt"))
        self.assertEqual([i.debugName().split(".")[0] for i in traced.graph.inputs()][1:],
                         ["x", "mask", "mu", "t", "spks", "cond", "r"])
        eager = wrappers.TurboEstimator(self.official().flow.decoder.estimator)
        g = torch.Generator().manual_seed(4)
        n, t = 3, 57
        mask = (torch.arange(t) < torch.tensor([57, 40, 12])[:, None]).float()[:, None]
        x, mu, cond = (torch.randn(n, 80, t, generator=g) for _ in range(3))
        spks = torch.randn(n, 80, generator=g)
        t_in, r_in = torch.tensor([0.0, 0.5, 0.0]), torch.tensor([0.5, 1.0, 1.0])
        with torch.no_grad():
            v = traced(x, mask, mu, t_in, spks, cond, r_in)
            torch.testing.assert_close(v, eager(x, mask, mu, t_in, spks, cond, r_in),
                                       rtol=0, atol=1e-5)
            # r reaches the output, row by row: each row at its own (t, r)
            # equals that row alone, and another r changes only its row.
            for i in range(n):
                alone = traced(x[i:i + 1], mask[i:i + 1], mu[i:i + 1], t_in[i:i + 1],
                               spks[i:i + 1], cond[i:i + 1], r_in[i:i + 1])
                torch.testing.assert_close(v[i:i + 1], alone, rtol=0, atol=1e-5)
            other_r = traced(x, mask, mu, t_in, spks, cond, torch.tensor([0.5, 0.75, 1.0]))
            self.assertGreater(float((other_r[1] - v[1]).abs().max()), 1e-3)
            torch.testing.assert_close(other_r[[0, 2]], v[[0, 2]], rtol=0, atol=1e-5)

    def test_goldens_reproduce_with_the_official_classes(self):
        with open(os.path.join(self.out, "golden", "cases.json")) as f:
            cases = json.load(f)["cases"]
        buffers = artifacts.load_bag(os.path.join(self.out, "buffers.pt"))
        model = self.official()
        jobs = []
        for c in cases:
            bag = artifacts.load_bag(os.path.join(self.out, "golden", c["name"] + ".pt"))
            voice = artifacts.load_bag(os.path.join(self.out, "voices", c["voice"] + ".pt"))
            mel, wav = reference.golden_case(model, voice, bag["tokens"], c, buffers["flow_noise"],
                                             buffers["hift_noise"], bag["hift_phase"], "turbo")
            self.assertLess(reference.rel_l2(mel, bag["mel"]), 1e-6, c["name"])
            self.assertLess(reference.rel_l2(wav, bag["wav"]), 1e-6, c["name"])
            jobs.append(dict(c, voice=voice, **bag))
        # The traced modules in a batch composition the self-check did not use.
        mods = load_traced(self.out)
        batch = jobs[::-1][:3]
        for job, (mel, wav) in zip(batch, reference.run_traced(mods, buffers, batch,
                                                               variant="turbo")):
            self.assertLess(reference.rel_l2(mel, job["mel"]), 1e-4, job["name"])
            self.assertLess(reference.rel_l2(wav, job["wav"]), 1e-4, job["name"])

    def test_checkpoint_variants_are_checked_strictly(self):
        turbo_state = artifacts.released_state_dict(s3model.build("tiny", SEED, "turbo"))
        self.assertIn("flow.decoder.estimator.time_embed_mixer.weight", turbo_state)
        turbo_ckpt = os.path.join(self.tmp, "s3gen_meanflow.safetensors")
        safetensors.torch.save_file(turbo_state, turbo_ckpt)
        standard_ckpt = os.path.join(self.tmp, "s3gen.safetensors")
        safetensors.torch.save_file(artifacts.released_state_dict(s3model.build("tiny", SEED)),
                                    standard_ckpt)
        out = os.path.join(self.tmp, "from_checkpoint")
        result = run_export("--variant", "turbo", "--checkpoint", turbo_ckpt, "--size", "tiny",
                            "--no-golden", "--out", out)
        self.assertEqual(result.returncode, 0, result.stdout[-3000:] + result.stderr[-3000:])
        manifest = artifacts.verify_manifest(out)
        self.assertEqual((manifest["variant"], manifest["source"]), ("turbo", "checkpoint"))
        a = torch.jit.load(os.path.join(self.out, "estimator.pt"))
        b = torch.jit.load(os.path.join(out, "estimator.pt"))
        g = torch.Generator().manual_seed(5)
        est = [torch.randn(2, 80, 30, generator=g), torch.ones(2, 1, 30),
               torch.randn(2, 80, 30, generator=g), torch.tensor([0.0, 0.5]),
               torch.randn(2, 80, generator=g), torch.randn(2, 80, 30, generator=g),
               torch.tensor([0.5, 1.0])]
        with torch.no_grad():
            torch.testing.assert_close(a(*est), b(*est), rtol=0, atol=1e-6)

        # The other variant's checkpoint: refused with the key and the right
        # --variant named (in process: the exit code 2 path of an ExportError
        # is test_checkpoint_missing_flow_key_exits_2's).
        for variant, ckpt, hint in (("standard", turbo_ckpt, "export it with --variant turbo"),
                                    ("turbo", standard_ckpt, "export it with --variant standard")):
            state = export_s3gen.read_state_dict(ckpt)
            with self.assertRaises(export_s3gen.ExportError) as err:
                export_s3gen.load_checkpoint(s3model.build("tiny", SEED, variant), "tiny", state,
                                             ckpt, variant)
            message = str(err.exception)
            self.assertIn(f"--variant {variant} S3Gen architecture", message)
            self.assertIn("time_embed_mixer.weight", message)
            self.assertIn(hint, message)


if __name__ == "__main__":
    unittest.main(verbosity=2)
