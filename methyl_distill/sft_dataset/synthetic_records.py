"""Synthetic papers and extraction records, for the dataset stage's tests and benchmark.

`write_synthetic_corpus` writes N paper-like texts (hard-wrapped, with hyphenated line breaks, as
text extracted from PDFs looks) and a records.jsonl whose PaperRecords quote them verbatim: bank
answers with evidence, a 'not reported' answer, a self-contained additional Q&A and marker records.
Everything is drawn from a seeded generator, so a corpus is reproducible.
"""

from __future__ import annotations

import random
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

from methyl_distill.extraction.papers import content_sha256
from methyl_distill.extraction.records import (
    AnsweredQuestion,
    MarkerPerformance,
    MarkerRecord,
    PaperRecord,
    QAPair,
    TokenUsage,
)
from methyl_distill.readers.document import normalise_text
from methyl_distill.text.not_reported import NOT_REPORTED

GENES = (
    "MGMT",
    "SEPT9",
    "SHOX2",
    "PTGER4",
    "GSTP1",
    "MLH1",
    "RASSF1A",
    "CDKN2A",
    "NDRG4",
    "BMP3",
    "APC",
    "VIM",
    "TWIST1",
    "RARB",
    "CDH1",
    "DAPK1",
    "SFRP2",
    "TFPI2",
    "BCAT1",
    "IKZF1",
    "WIF1",
    "HOXA9",
    "PAX5",
    "ZNF331",
)
CONDITIONS = (
    "glioblastoma",
    "colorectal cancer",
    "lung adenocarcinoma",
    "prostate cancer",
    "breast cancer",
    "head and neck squamous cell carcinoma",
    "hepatocellular carcinoma",
    "bladder cancer",
    "gastric cancer",
)
SAMPLES = ("tumour tissue", "plasma cell-free DNA", "serum", "stool", "urine", "bronchial lavage", "saliva")
ASSAYS = (
    "methylation-specific PCR",
    "quantitative MSP",
    "pyrosequencing",
    "bisulfite sequencing",
    "droplet digital PCR",
    "Infinium methylation arrays",
    "whole-genome bisulfite sequencing",
)
USES = ("early_detection", "screening", "diagnosis", "prognosis", "monitoring")
FILLER = (
    "Samples were collected under informed consent and stored at minus eighty degrees until extraction.",
    "Bisulfite conversion was performed with a commercial kit following the manufacturer's protocol.",
    "Statistical analyses used two-sided tests and a significance level of five percent throughout.",
    "Clinical data were abstracted from medical records by two investigators blinded to the assay results.",
    "The cohort was recruited at several centres over four years with central review of pathology.",
    "Receiver operating characteristic curves were computed and confidence intervals obtained by bootstrap.",
)


def _paper(rng: random.Random, index: int, filler: int) -> tuple[str, dict[str, object]]:
    gene, partner = rng.sample(GENES, 2)
    condition, sample, assay = rng.choice(CONDITIONS), rng.choice(SAMPLES), rng.choice(ASSAYS)
    cpg = f"cg{rng.randrange(10**7, 10**8):08d}"
    sensitivity, specificity = rng.randint(55, 95), rng.randint(70, 99)
    cohort = rng.randint(40, 4000)
    finding = (
        f"Promoter hypermethylation of {gene} was detected in {sensitivity}% of {condition} cases "
        f"(study {index}) and the CpG site {cpg} showed the largest difference between cases and controls."
    )
    performance = (
        f"In {sample} from {cohort} subjects, {assay} of {gene} reached a sensitivity of {sensitivity}% "
        f"and a specificity of {specificity}% for {condition}."
    )
    panel = (
        f"Combining {gene} with {partner} in a two-marker panel improved detection of early-stage disease."
    )
    body = [f"Title: {gene} methylation in {condition}, cohort {index}"]
    body += [rng.choice(FILLER) for _ in range(filler)] + [finding]
    body += [rng.choice(FILLER) for _ in range(filler)] + [performance, panel]
    body += [rng.choice(FILLER) for _ in range(filler)]
    # Hard-wrapped like PDF text; long words may be hyphenated at a line break.
    wrapped = textwrap.fill(" ".join(body), width=rng.randint(60, 90), break_long_words=False)
    text = wrapped.replace("hypermethylation", "hyper-\nmethylation", 1) if rng.random() < 0.5 else wrapped
    facts: dict[str, object] = dict(
        gene=gene,
        partner=partner,
        condition=condition,
        sample=sample,
        assay=assay,
        cpg=cpg,
        sensitivity=sensitivity,
        specificity=specificity,
        cohort=cohort,
        finding=finding,
        performance=performance,
        panel=panel,
    )
    return text, facts


def synthetic_record(
    text: str, facts: dict[str, object], file_id: str, extracted_at: datetime | None = None
) -> PaperRecord:
    """A PaperRecord for a paper of `_paper`, with verbatim evidence quotes."""
    gene, partner, condition = facts["gene"], facts["partner"], facts["condition"]
    finding, performance, panel = str(facts["finding"]), str(facts["performance"]), str(facts["panel"])
    marker = MarkerRecord(
        marker=f"{gene} promoter",
        gene=str(gene),
        cpg_sites=[str(facts["cpg"])],
        region="promoter",
        direction="hypermethylated",
        condition=str(condition),
        sample_types=[str(facts["sample"])],
        assays=[str(facts["assay"])],
        clinical_uses=["diagnosis"],
        performance=MarkerPerformance(
            sensitivity=int(facts["sensitivity"]) / 100,  # type: ignore[call-overload]
            specificity=int(facts["specificity"]) / 100,  # type: ignore[call-overload]
            auc=None,
            cohort_size=int(facts["cohort"]),  # type: ignore[call-overload]
            notes="",
        ),
        related=[f"panel with {partner}"],
        evidence=[finding, performance],
    )
    answers = [
        AnsweredQuestion(
            question_id="markers",
            question="Which DNA methylation markers does the study report (genes, CpG sites, regions)?",
            answer=f"The {gene} promoter (CpG site {facts['cpg']}), hypermethylated in {condition}.",
            evidence=[finding],
        ),
        AnsweredQuestion(
            question_id="sensitivity_specificity",
            question="What sensitivity and specificity do the markers achieve, and in which comparison?",
            answer=f"Sensitivity {facts['sensitivity']}% and specificity {facts['specificity']}% "
            f"in {facts['sample']} from {facts['cohort']} subjects.",
            evidence=[performance],
        ),
        AnsweredQuestion(
            question_id="therapy_response",
            question="Does the study report prediction of therapy response?",
            answer=NOT_REPORTED,
            evidence=[],
        ),
    ]
    additional = [
        QAPair(
            question=f"Which marker improves detection of early-stage {condition} when combined with {gene}?",
            answer=f"{partner}: a two-marker panel of {gene} with {partner} improved early detection.",
            evidence=[panel],
        )
    ]
    return PaperRecord(
        file_id=file_id,
        file_ids=[file_id],
        source_paths=[f"{file_id}.txt"],
        content_sha256=content_sha256(normalise_text(text)),
        question_bank_version="synthetic-1",
        prompt_version="synthetic-1",
        teacher_model="synthetic",
        chunks=1,
        answers=answers,
        markers=[marker],
        additional_qa=additional,
        usage=TokenUsage(prompt_tokens=1000, completion_tokens=400, requests=1),
        extracted_at=extracted_at or datetime(2026, 11, 1, tzinfo=UTC),
    )


def write_synthetic_corpus(
    directory: str | Path, papers: int, seed: int = 0, filler_sentences: int = 2
) -> tuple[Path, Path]:
    """Write `papers` texts under directory/papers and their records to directory/records.jsonl.

    Each paper has about 3 * `filler_sentences` sentences of methods prose around its findings
    (~100 characters each): 2 gives ~1 KB papers, 15 gives ~5 KB.
    """
    directory = Path(directory)
    papers_dir = directory / "papers"
    papers_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    records_path = directory / "records.jsonl"
    with records_path.open("w", encoding="utf-8") as records:
        for index in range(papers):
            text, facts = _paper(rng, index, filler_sentences)
            file_id = f"paper-{index:06d}"
            (papers_dir / f"{file_id}.txt").write_text(text + "\n", encoding="utf-8")
            record = synthetic_record(text, facts, file_id, start + timedelta(seconds=index))
            records.write(record.model_dump_json() + "\n")
    return papers_dir, records_path
