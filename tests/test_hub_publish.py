"""Publishing to the Hub, against the local stand-in for its endpoints (tests/fake_hub/server.py).

`HF_HUB_OFFLINE=1` holds for the whole session (conftest.py) and huggingface_hub reads it once, at
import: the `hub` fixture lifts it (and turns Xet off, which the stand-in does not speak) through
monkeypatch, for the tests that use the fixture only, and points HF_ENDPOINT at the stand-in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import DatasetCard, ModelCard
from huggingface_hub import constants as hub_constants

from methyl_distill.ops.hub_publish import (
    HubPublishError,
    HubTarget,
    HubTokenError,
    check_hub_access,
    hub_target_from_environment,
    push_files,
    resolve_hub_token,
)
from methyl_distill.sft_dataset import DatasetConfig, build_sft_dataset
from methyl_distill.sft_dataset.dataset_card import render_card
from methyl_distill.sft_dataset.hub_push import DatasetPushError, card_data_files, push_dataset_to_hub
from methyl_distill.sft_dataset.synthetic_records import write_synthetic_corpus
from methyl_distill.training.evaluation import EvaluationReport
from methyl_distill.training.evaluation_metrics import AggregateScores
from methyl_distill.training.finetune import FinetuneSummary
from methyl_distill.training.model_release import (
    ModelReleaseError,
    ModelReleaseOptions,
    push_model_to_hub,
)
from tests.fake_hub.server import FakeHubConfig, FakeHubHandle, running_fake_hub

TOKEN = "hf_write_token_that_must_never_be_seen_0123456789"
OTHER_TOKEN = "hf_other_token_from_another_source_9876543210"
READ_ONLY_TOKEN = "hf_read_only_token_5555555555"


@pytest.fixture
def clean_token_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No token anywhere: no HF_TOKEN, no block named, no login file, no .env in the working folder.
    Returns the login token file's path (absent)."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_SECRET_BLOCK", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    login = tmp_path / "hf-home" / "token"
    monkeypatch.setattr(hub_constants, "HF_TOKEN_PATH", str(login))
    monkeypatch.setattr(hub_constants, "HF_STORED_TOKENS_PATH", str(login.parent / "stored_tokens"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return login


@pytest.fixture
def hub(clean_token_sources: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHubHandle]:
    config = FakeHubConfig(
        tokens={TOKEN: "alice", OTHER_TOKEN: "bob", READ_ONLY_TOKEN: "carol"},
        read_only_tokens={READ_ONLY_TOKEN},
        lfs_threshold_bytes=2048,
    )
    with running_fake_hub(config) as handle:
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(hub_constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setenv("HF_ENDPOINT", handle.endpoint)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield handle


def _dataset(tmp_path: Path, **config: object):  # type: ignore[no-untyped-def]
    papers, records = write_synthetic_corpus(tmp_path / "corpus", 12, seed=3)
    return build_sft_dataset([records], tmp_path / "dataset", papers, DatasetConfig(seed=5, **config))


def _no_token_anywhere(hub: FakeHubHandle, *texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
    for body in hub.state.raw_bodies:
        assert TOKEN.encode() not in body


# --- the dataset ---------------------------------------------------------------------------------


def test_dataset_push_is_one_commit_of_the_card_and_the_files_it_names(
    hub: FakeHubHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import datasets

    summary = _dataset(tmp_path, card_license="cc-by-4.0")
    caplog.set_level(logging.DEBUG)
    result = push_dataset_to_hub(summary, hub_target_from_environment("alice/methyl-sft"))

    pushed = hub.state.files("dataset", "alice/methyl-sft")
    split_files = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}
    non_empty = {split: name for split, name in split_files.items() if summary.splits[split].samples}
    assert set(pushed) == {"README.md", "stats.json", *non_empty.values()} == set(result.files)
    output = Path(summary.output_directory)
    for name, content in pushed.items():
        assert content == (output / name).read_bytes(), name  # the card on the Hub is the local card
    assert hub.state.lfs_objects, "train.jsonl is above the stand-in's LFS threshold: the LFS path ran"
    assert hub.state.repo("dataset", "alice/methyl-sft").private
    [commit] = hub.state.commits("dataset", "alice/methyl-sft")
    assert commit.summary.startswith("methyl-distill dataset: train ")

    card = DatasetCard(pushed["README.md"].decode())
    assert card.data.license == "cc-by-4.0"
    assert card.data.language == ["en"]
    assert card.data.task_categories == ["text-generation", "question-answering"]
    assert card.data.size_categories == ["n<1K"]
    [config] = card.data.to_dict()["configs"]
    assert {entry["split"]: entry["path"] for entry in config["data_files"]} == non_empty
    # What the Hub holds loads as the card says, with the counts of the build.
    local_copy = tmp_path / "from-hub"
    local_copy.mkdir()
    for name, content in pushed.items():
        (local_copy / name).write_bytes(content)
    loaded = datasets.load_dataset(str(local_copy), cache_dir=str(tmp_path / "datasets-cache"))
    assert {split: loaded[split].num_rows for split in loaded} == {
        split: summary.splits[split].samples for split in non_empty
    }
    _no_token_anywhere(hub, caplog.text, result.model_dump_json())

    # The same dataset again: no new commit; the card is not rewritten.
    push_dataset_to_hub(summary, hub_target_from_environment("alice/methyl-sft"))
    assert len(hub.state.commits("dataset", "alice/methyl-sft")) == 1


def test_the_card_names_only_splits_that_hold_samples(tmp_path: Path) -> None:
    summary = _dataset(tmp_path)
    emptied = summary.model_copy(deep=True)
    emptied.splits["validation"].samples = 0
    card_path = tmp_path / "README.md"
    card_path.write_text(render_card(emptied), encoding="utf-8")
    assert card_data_files(card_path) == {"train.jsonl", "test.jsonl"}
    card_path.write_text(render_card(summary), encoding="utf-8")
    assert card_data_files(card_path) == {"train.jsonl", "val.jsonl", "test.jsonl"}


def test_a_dataset_changed_since_its_build_is_not_pushed(hub: FakeHubHandle, tmp_path: Path) -> None:
    summary = _dataset(tmp_path)
    with Path(summary.train_jsonl).open("a", encoding="utf-8") as handle:
        handle.write('{"messages": []}\n')
    with pytest.raises(DatasetPushError, match=r"train.jsonl: missing or changed since the build"):
        push_dataset_to_hub(summary, hub_target_from_environment("alice/methyl-sft"))
    assert hub.state.repos == {}


def test_build_dataset_cli_pushes_after_the_build(
    hub: FakeHubHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from methyl_distill.cli import main

    papers, records = write_synthetic_corpus(tmp_path / "corpus", 8, seed=2)
    code = main(
        [
            "build-dataset",
            "--records",
            str(records),
            "--papers_directory",
            str(papers),
            "--output_directory",
            str(tmp_path / "dataset"),
            "--without_prefect",
            "--push_to_hub",
            "alice/methyl-sft",
            "--hub_private",
            "false",
            "--hub_revision",
            "v1",
            "--hub_commit_message",
            "first release",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    repo = hub.state.repo("dataset", "alice/methyl-sft")
    assert not repo.private
    [commit] = hub.state.commits("dataset", "alice/methyl-sft", branch="v1")
    assert commit.summary == "first release" and "README.md" in commit.files
    assert hub.state.files("dataset", "alice/methyl-sft") == {}  # main untouched
    _no_token_anywhere(hub, out.out, out.err)


def test_a_missing_token_fails_before_the_build_with_a_clear_message(
    clean_token_sources: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from methyl_distill.cli import main

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    papers, records = write_synthetic_corpus(tmp_path / "corpus", 4, seed=2)
    output = tmp_path / "dataset"
    code = main(
        [
            "build-dataset",
            "--records",
            str(records),
            "--papers_directory",
            str(papers),
            "--output_directory",
            str(output),
            "--without_prefect",
            "--push_to_hub",
            "alice/methyl-sft",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "needs a token with write access" in err
    assert "$HF_TOKEN is not set" in err and "HF_TOKEN_SECRET_BLOCK" in err
    assert str(clean_token_sources) in err  # where the login would be
    assert not output.exists()


def test_offline_mode_is_named_not_hidden(clean_token_sources: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubPublishError, match="HF_HUB_OFFLINE is set"):
        check_hub_access(HubTarget(repo_id="alice/x"))


# --- tokens --------------------------------------------------------------------------------------


def test_token_precedence_environment_then_login(
    clean_token_sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = HubTarget(repo_id="alice/x")
    with pytest.raises(HubTokenError, match="none was found"):
        resolve_hub_token(target)
    clean_token_sources.parent.mkdir(parents=True)
    clean_token_sources.write_text(OTHER_TOKEN + "\n", encoding="utf-8")
    token = resolve_hub_token(target)
    assert (token.value.get_secret_value(), token.source) == (OTHER_TOKEN, "huggingface_hub login")
    Path(".env").write_text(f"HF_TOKEN={TOKEN}\n", encoding="utf-8")  # the working folder's .env
    assert resolve_hub_token(target).source == "$HF_TOKEN"
    Path(".env").unlink()
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    token = resolve_hub_token(target)
    assert (token.value.get_secret_value(), token.source) == (TOKEN, "$HF_TOKEN")
    assert TOKEN not in repr(token) and TOKEN not in str(token)


def test_a_refused_or_read_only_token_is_an_error_that_does_not_show_it(
    hub: FakeHubHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = hub_target_from_environment("alice/methyl-sft")
    assert check_hub_access(target) == "alice"
    monkeypatch.setenv("HF_TOKEN", "hf_unknown_token_000000000000")
    with pytest.raises(HubPublishError, match=r"refused the token from \$HF_TOKEN \(HTTP 401\)") as refused:
        check_hub_access(target)
    assert "hf_unknown_token" not in str(refused.value)
    monkeypatch.setenv("HF_TOKEN", READ_ONLY_TOKEN)
    with pytest.raises(HubPublishError, match="can only read") as read_only:
        check_hub_access(target)
    with pytest.raises(HubPublishError, match="HTTP 403") as refused_push:
        push_files(target, "dataset", {"README.md": b"---\nlicense: other\n---\n"}, default_message="x")
    for error in (read_only.value, refused_push.value):
        assert READ_ONLY_TOKEN not in str(error)


def test_a_file_holding_the_token_is_never_uploaded(hub: FakeHubHandle) -> None:
    target = hub_target_from_environment("alice/leak")
    files = {"README.md": b"---\nlicense: other\n---\n", "args.json": json.dumps({"t": TOKEN}).encode()}
    with pytest.raises(HubPublishError, match=r"args\.json contains the Hub token"):
        push_files(target, "model", files, default_message="x")
    assert hub.state.raw_bodies == []


# --- the adapter ---------------------------------------------------------------------------------


def _finetune_run(folder: Path) -> FinetuneSummary:
    """A finished fine-tune's folder as `finetune` leaves it (the adapter's weights are stand-in bytes:
    publishing copies them, it does not load them)."""
    adapter = folder / "adapter"
    adapter.mkdir(parents=True)
    base_folder = folder / "models" / "smollm2-135m"
    (adapter / "adapter_config.json").write_text(
        json.dumps(
            {
                "base_model_name_or_path": str(base_folder),
                "peft_type": "LORA",
                "r": 8,
                "lora_alpha": 32,
                "lora_dropout": 0.05,
                "target_modules": ["q_proj", "v_proj"],
            }
        ),
        encoding="utf-8",
    )
    (adapter / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 40)
    (adapter / "args.json").write_text(
        json.dumps({"model": str(base_folder), "template": "chatml", "hub_token": None}), encoding="utf-8"
    )
    (folder / "loss_curve.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    (folder / "training_log.jsonl").write_text('{"step": 1, "loss": 2.5}\n', encoding="utf-8")
    summary = FinetuneSummary(
        output_directory=str(folder),
        adapter_path=str(adapter),
        merged_model_path=None,
        loss_curve_path=str(folder / "loss_curve.png"),
        training_log_path=str(folder / "training_log.jsonl"),
        args_path=str(adapter / "args.json"),
        preset="smollm2-135m",
        base_model=str(base_folder),
        device="cpu",
        torch_dtype="float32",
        attn_impl="sdpa",
        train_samples=40,
        val_samples=5,
        global_step=30,
        first_train_loss=2.5,
        final_train_loss=1.25,
        final_eval_loss=1.5,
        train_runtime_s=61.0,
        trainable_parameters="4.9M",
        resumed_from=None,
    )
    (folder / "finetune_summary.json").write_text(summary.model_dump_json(), encoding="utf-8")
    return summary


def _evaluation(path: Path, adapter_path: str) -> Path:
    def scores(rouge: float, recall: float) -> AggregateScores:
        return AggregateScores(
            examples=12,
            rouge_l_f1=rouge,
            marker_recall=recall,
            examples_with_markers=10,
            direction_agreement=0.75,
            examples_with_direction=8,
        )

    report = EvaluationReport(
        test_path="test.jsonl",
        adapter_path=adapter_path,
        base_model="base",
        max_new_tokens=512,
        aggregates={"base": scores(0.1, 0.2), "tuned": scores(0.31234, 0.6)},
        examples=[],
    )
    path.write_text(report.model_dump_json(), encoding="utf-8")
    return path


def test_adapter_push_carries_a_model_card_with_the_evaluation(
    hub: FakeHubHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    summary = _finetune_run(tmp_path / "run")
    local_config = Path(summary.adapter_path, "adapter_config.json").read_bytes()
    options = ModelReleaseOptions(
        dataset_repo_id="alice/methyl-sft",
        evaluation_report=str(_evaluation(tmp_path / "evaluation.json", summary.adapter_path)),
    )
    caplog.set_level(logging.DEBUG)
    result = push_model_to_hub(summary, hub_target_from_environment("alice/methyl-student"), options)

    pushed = hub.state.files("model", "alice/methyl-student")
    assert set(pushed) == {
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "args.json",
        "loss_curve.png",
        "training_log.jsonl",
    }
    assert (
        pushed["adapter_model.safetensors"]
        == Path(summary.adapter_path, "adapter_model.safetensors").read_bytes()
    )
    pushed_config = json.loads(pushed["adapter_config.json"])
    assert pushed_config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert Path(summary.adapter_path, "adapter_config.json").read_bytes() == local_config  # local untouched
    assert "hub_token" not in json.loads(pushed["args.json"])

    card = ModelCard(pushed["README.md"].decode())
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.library_name == "peft"
    assert card.data.datasets == ["alice/methyl-sft"]
    assert {"methyl-distill", "dna-methylation", "lora"} <= set(card.data.tags)
    values = {result.metric_name: result.metric_value for result in card.data.eval_results}
    assert values == {"ROUGE-L F1": 0.3123, "Marker recall": 0.6, "Direction agreement": 0.75}
    assert "| tuned | 12 | 0.3123 | 0.6000 | 0.7500 |" in card.text
    assert "![loss curve](loss_curve.png)" in card.text
    _no_token_anywhere(hub, caplog.text, result.model_dump_json())


def test_an_evaluation_of_another_adapter_is_refused(hub: FakeHubHandle, tmp_path: Path) -> None:
    summary = _finetune_run(tmp_path / "run")
    report = _evaluation(tmp_path / "evaluation.json", str(tmp_path / "elsewhere" / "adapter"))
    with pytest.raises(ModelReleaseError, match="its numbers do not belong on this card"):
        push_model_to_hub(
            summary,
            hub_target_from_environment("alice/x"),
            ModelReleaseOptions(evaluation_report=str(report)),
        )
    assert hub.state.repos == {}


def test_export_cli_writes_the_release_and_pushes_it_to_a_branch(
    hub: FakeHubHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from methyl_distill.cli import main

    summary = _finetune_run(tmp_path / "run")
    code = main(
        [
            "export",
            "--finetune_directory",
            summary.output_directory,
            "--output_directory",
            str(tmp_path / "release"),
            "--push_to_hub",
            "alice/methyl-student",
            "--hub_revision",
            "candidate",
            "--hub_commit_message",
            "adapter after 30 steps",
            "--hub_base_model",
            "HuggingFaceTB/SmolLM2-135M",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    [commit] = hub.state.commits("model", "alice/methyl-student", branch="candidate")
    assert commit.summary == "adapter after 30 steps"
    local = {path.name: path.read_bytes() for path in (tmp_path / "release").iterdir()}
    assert local == commit.files  # the folder and the push are the same release
    assert ModelCard(commit.files["README.md"].decode()).data.base_model == "HuggingFaceTB/SmolLM2-135M"
    _no_token_anywhere(hub, out.out, out.err)


# --- a Prefect Secret block and the flow ---------------------------------------------------------


@pytest.mark.flow
def test_flow_pushes_with_the_token_of_a_secret_block_over_a_login(
    prefect_harness: None, hub: FakeHubHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from methyl_distill.flows.dataset import build_dataset_flow
    from prefect.blocks.system import Secret

    Secret(value=OTHER_TOKEN).save("hub-token-for-tests", overwrite=True)
    monkeypatch.delenv("HF_TOKEN")
    hub_constants_path = Path(hub_constants.HF_TOKEN_PATH)
    hub_constants_path.parent.mkdir(parents=True, exist_ok=True)
    hub_constants_path.write_text(READ_ONLY_TOKEN, encoding="utf-8")  # a login on the machine: not used
    monkeypatch.setenv("HF_TOKEN_SECRET_BLOCK", "hub-token-for-tests")
    monkeypatch.setenv("METHYL_DISTILL_CACHE_DIR", str(tmp_path / "cache"))
    target = hub_target_from_environment("bob/methyl-sft", private=False)
    assert resolve_hub_token(target).source == "Prefect Secret block"

    papers, records = write_synthetic_corpus(tmp_path / "corpus", 8, seed=6)
    summary = build_dataset_flow([str(records)], str(tmp_path / "dataset"), str(papers), push_to_hub=target)
    pushed = hub.state.files("dataset", "bob/methyl-sft")  # created in bob's name: the block's token
    assert pushed["README.md"] == Path(summary.card).read_bytes()
    # A cached build is pushed too (the push is outside the build's cache).
    build_dataset_flow(
        [str(records)],
        str(tmp_path / "dataset"),
        str(papers),
        push_to_hub=target.model_copy(update={"repo_id": "bob/second"}),
    )
    assert hub.state.files("dataset", "bob/second") == pushed

    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the environment wins over the block
    assert resolve_hub_token(target).source == "$HF_TOKEN"
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_TOKEN_SECRET_BLOCK", "no-such-block")
    with pytest.raises(HubTokenError, match=r"'no-such-block' .* could not be loaded"):
        resolve_hub_token(hub_target_from_environment("bob/x"))


def test_merged_release_pushes_the_merged_folder_as_transformers(hub: FakeHubHandle, tmp_path: Path) -> None:
    summary = _finetune_run(tmp_path / "run")
    merged = Path(summary.output_directory) / "merged"
    merged.mkdir()
    (merged / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    (merged / "model.safetensors").write_bytes(b"w" * 5000)
    (merged / "args.json").write_text('{"model": "x", "hub_token": "leftover"}', encoding="utf-8")
    (merged / ".cache").mkdir()
    (merged / ".cache" / "lock").write_text("", encoding="utf-8")
    summary = summary.model_copy(update={"merged_model_path": str(merged)})
    push_model_to_hub(summary, hub_target_from_environment("alice/merged"), ModelReleaseOptions(merged=True))
    pushed = hub.state.files("model", "alice/merged")
    assert set(pushed) == {
        "README.md",
        "config.json",
        "model.safetensors",
        "args.json",
        "loss_curve.png",
        "training_log.jsonl",
    }
    assert json.loads(pushed["args.json"]) == {"model": "x"}
    card = ModelCard(pushed["README.md"].decode())
    assert card.data.library_name == "transformers" and "merged" in card.data.tags
    assert card.data.eval_results is None and "No evaluation report was published" in card.text


@pytest.mark.flow
@pytest.mark.slow
def test_finetune_pushes_its_real_adapter_and_export_merges_and_pushes(
    prefect_harness: None, hub: FakeHubHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real ms-swift on the tiny Mistral: `finetune --push_to_hub` pushes what it trained, and
    `export --hub_merged` merges with ms-swift's export and pushes the merged model."""
    from methyl_distill.cli import main
    from tests.test_training_flows import QA, write_chat_file

    data = tmp_path / "data"
    data.mkdir()
    write_chat_file(data / "train.jsonl", QA, repeat=4)
    run = tmp_path / "finetune"
    common = ["--dataset_directory", str(data), "--output_directory", str(run), "--preset", "tiny-mistral"]
    training = ["--max_steps", "2", "--save_steps", "2", "--batch_size", "4", "--max_length", "128"]
    code = main(
        [
            "finetune",
            *common,
            *training,
            "--cache_dir",
            str(tmp_path / "models"),
            "--gradient_checkpointing",
            "false",
            "--device",
            "cpu",
            "--push_to_hub",
            "alice/tiny-student",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    pushed = hub.state.files("model", "alice/tiny-student")
    assert pushed["adapter_model.safetensors"] == (run / "adapter" / "adapter_model.safetensors").read_bytes()
    card = ModelCard(pushed["README.md"].decode())
    assert card.data.library_name == "peft" and card.data.base_model is None  # a random tiny Mistral
    assert "no Hub id is known" in card.text and "steps" in card.text

    code = main(
        ["export", "--finetune_directory", str(run), "--push_to_hub", "alice/tiny-merged", "--hub_merged"]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    merged = hub.state.files("model", "alice/tiny-merged")
    assert "config.json" in merged and any(name.endswith(".safetensors") for name in merged)
    assert ModelCard(merged["README.md"].decode()).data.library_name == "transformers"
    _no_token_anywhere(hub, out.out, out.err)
