"""The JATS XML and HTML readers, held to the text they must produce from hand-written fixtures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from methyl_distill.readers.document import ReadPaper, UnreadablePaperError, omit_back_matter
from methyl_distill.readers.html import READER as HTML_READER
from methyl_distill.readers.html import read_html
from methyl_distill.readers.jats import READER as JATS_READER
from methyl_distill.readers.jats import read_jats
from methyl_distill.readers.markup_text import citation_placeholder, finish_inline
from methyl_distill.text.sentences import split_sentences

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "papers"
SAMPLE_PAPER = REPO / "data" / "papers" / "pax1_cervical_screening.xml"

# What citation markers leave behind when they are not cleaned up.
_CITATION_NOISE = [
    re.compile(r"\[\s*\d"),  # [3]  [3, 4]
    re.compile(r"\(\s*\d+\s*(?:[,;\u2013-]\s*\d+\s*)+\)"),  # (5–7)  (3, 4)
    re.compile(r"\(\s*\d{1,2}\s*\)(?!\s*$)"),  # (6) in running text (not a formula number at line end)
    re.compile(r"[,;]\s*[,;]"),  # ", ,"
    re.compile(r" [,.;:](?:\s|$)"),  # "reported ." / "word , and"
    re.compile(r"\(\s*\)|\[\s*\]"),  # empty brackets
    re.compile("[\ue000-\uf8ff]"),  # placeholders that escaped
]


def _section(paper: ReadPaper, title: str) -> str:
    """The body of the section headed `title` (without the heading)."""
    for section in paper.sections:
        if section.title == title:
            text = paper.text[section.start : section.end]
            return text[len(title) :].strip()
    raise AssertionError(f"no section {title!r} in {[s.title for s in paper.sections]}")


def _paragraphs(paper: ReadPaper, title: str) -> list[str]:
    return _section(paper, title).split("\n\n")


def _assert_no_citation_noise(text: str) -> None:
    for line in text.split("\n"):
        for pattern in _CITATION_NOISE:
            assert not pattern.search(line), f"citation noise {pattern.pattern!r} in {line!r}"


# --- citation markers -------------------------------------------------------------------------------

C = citation_placeholder


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["as reported [", C("3"), ", ", C("4"), "] in tumours."], "as reported in tumours."),
        (["as reported [", C("3"), ", ", C("4"), "]"], "as reported"),
        (["shown previously (", C("5"), "\u2013", C("7"), ")."], "shown previously."),
        (["shown previously ", C("(5-7)"), "."], "shown previously."),
        (["methylated", C("3"), ",", C("4"), " in CIN3."], "methylated in CIN3."),
        (["previously [", C("3"), "], and later"], "previously, and later"),
        (["in plasma (Table 2; [", C("5"), "])."], "in plasma (Table 2)."),
        (["in plasma ([", C("5"), "]; Table 2)."], "in plasma (Table 2)."),
        (["panels (", C("Kim et al., 2012"), "; ", C("Ortiz and Patel, 2015"), ")."], "panels."),
        (["as ", C("Ilse et al."), " (", C("2014"), ") showed"], "as Ilse et al. (2014) showed"),
        (["lower (e.g., ", C("6"), "), possibly"], "lower, possibly"),
        (["confirmed [see ", C("8"), ", ", C("9"), "]. Next"], "confirmed. Next"),
        (["a cohort [", C("3"), ", unpublished data]"], "a cohort [unpublished data]"),
        (["no citation (n = 5) and [x] stay"], "no citation (n = 5) and [x] stay"),
    ],
)
def test_citation_markers_go_with_their_brackets(pieces: list[str], expected: str) -> None:
    assert finish_inline(pieces) == expected


# --- JATS -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pmc_article() -> ReadPaper:
    return read_jats((FIXTURES / "jats_pmc_article.xml").read_bytes())


def test_jats_front_matter(pmc_article: ReadPaper) -> None:
    assert pmc_article.format == "jats" and pmc_article.reader == JATS_READER == "jats/1"
    title = "SHOX2 and RASSF1A methylation of CpG islands in pleural effusions: 5-mC levels measured by qMSP"
    assert pmc_article.metadata.title == title
    assert pmc_article.text.startswith(title + "\n\nAbstract\n\n")
    assert pmc_article.metadata.doi == "10.5555/md.fixture.0042"
    assert pmc_article.metadata.pmid == "39999991"
    assert pmc_article.metadata.pmcid == "PMC9999991"


def test_jats_structured_abstract_keeps_its_parts(pmc_article: ReadPaper) -> None:
    assert _paragraphs(pmc_article, "Abstract") == [
        "Background: Cytology of pleural effusions misses about 40% of malignant effusions. We measured "
        "SHOX2 and RASSF1A promoter methylation in effusion cell pellets.",
        "Methods: Effusions from 212 patients were analysed by quantitative methylation-specific PCR (qMSP).",
        "Results: The two-gene panel detected 81% of malignant effusions at a specificity of 94% (AUC 0.89).",
        "Conclusions: Methylation testing adds to cytology in the work-up of pleural effusions.",
    ]
    assert "graphical abstract" not in pmc_article.text


def test_jats_sections_in_document_order_with_roles(pmc_article: ReadPaper) -> None:
    assert [(section.title, section.role) for section in pmc_article.sections] == [
        (pmc_article.metadata.title, "title"),
        ("Abstract", "abstract"),
        ("1 Introduction", "body"),
        ("2 Methods", "body"),
        ("2.1 Patients and samples", "body"),
        ("2.2 Methylation analysis", "body"),
        ("3 Results", "body"),
        ("4 Discussion", "body"),
        ("Competing interests", "back_matter"),
        ("Acknowledgements", "back_matter"),
        ("Footnotes", "back_matter"),
        ("References", "back_matter"),
        ("Author notes", "back_matter"),
        ("Funding", "back_matter"),
    ]
    for section in pmc_article.sections:
        assert pmc_article.text[section.start : section.end].startswith(section.title)


def test_jats_body_text_sentence_by_sentence(pmc_article: ReadPaper) -> None:
    assert split_sentences(_section(pmc_article, "1 Introduction")) == [
        "Malignant pleural effusion is a frequent complication of lung and breast cancer.",
        "Cytology is specific but its sensitivity is limited.",
        "Hypermethylation of the SHOX2 promoter has been reported in bronchial lavage and plasma and in "
        "pleural fluid as reported by Ilse et al. (2014).",
        "Earlier panels combined several genes.",
    ]
    assert split_sentences(_section(pmc_article, "4 Discussion")) == [
        "Our panel detected most effusions missed by cytology, as shown previously.",
        "The specificity was lower than in plasma, possibly because inflammation raises the background, "
        "and should be confirmed.",
    ]


def test_jats_lists_formulas_and_cross_references(pmc_article: ReadPaper) -> None:
    assert _paragraphs(pmc_article, "2.1 Patients and samples") == [
        "We enrolled 212 consecutive patients with a pleural effusion of unknown cause:",
        "118 with a malignant effusion, confirmed by histology or cytology;\n"
        "94 with a benign effusion after 12 months of follow-up.",
    ]
    assert _paragraphs(pmc_article, "2.2 Methylation analysis") == [
        "DNA from 10 ml of effusion was bisulfite converted and analysed by qMSP. The methylation level "
        "was expressed as the percentage of methylated reference (PMR):",
        "PMR=100×2^(−ΔΔCt) (1)",
        "A sample was called positive when PMR exceeded 4 for either gene, a cut-off chosen in an "
        "independent training set – see Section 3.",
    ]
    assert _section(pmc_article, "3 Results").startswith(
        "SHOX2 was methylated in 71% and RASSF1A in 58% of malignant effusions (Table 1). Methylation "
        "levels were highest in lung adenocarcinoma (Fig. 1)."
    )


def test_jats_table_and_figure(pmc_article: ReadPaper) -> None:
    paragraphs = _paragraphs(pmc_article, "3 Results")
    assert paragraphs[1].split("\n") == [
        "Table 1. Diagnostic performance of methylation markers in pleural effusions. Cut-off: PMR > 4.",
        "Marker | Sensitivity (%) | Specificity (%) | AUC",
        "SHOX2 | 71 | 97 | 0.85",
        "RASSF1A | 58 | 95 | 0.79",  # the table-footnote marker "a" is not glued to 95
        "Panel | 81 | 94 | 0.89",
        "Cytology alone detected 52% of malignant effusions",
        "a Two benign effusions from patients with pneumonia were positive.",
    ]
    assert paragraphs[2] == (
        "Figure 1. Methylation levels by diagnosis. PMR values of SHOX2 on a log scale; bars show medians."
    )


def test_jats_has_no_citation_noise(pmc_article: ReadPaper) -> None:
    kept, _ = omit_back_matter(pmc_article)
    _assert_no_citation_noise(kept.text)
    assert "Fixture Press" not in pmc_article.text  # journal metadata is not text
    assert "Creative Commons" not in pmc_article.text
    assert "a.berger" in _section(pmc_article, "Author notes")


def test_jats_back_matter_is_left_out(pmc_article: ReadPaper) -> None:
    assert _section(pmc_article, "References").split("\n")[:2] == [
        "1. Roberts ME. Pleural disease guideline. Thorax. 2023;78:1–42. doi:10.5555/fixture.ref.1",
        "2. Schmidt B, Liebenberg V. SHOX2 DNA methylation in bronchial aspirates. BMC Cancer. 2010. 10. 600",
    ]
    kept, omitted = omit_back_matter(pmc_article)
    assert omitted.sections == (
        "Competing interests",
        "Acknowledgements",
        "Footnotes",
        "References",
        "Author notes",
        "Funding",
    )
    assert omitted.tokens > 100 and omitted.characters > 500
    for gone in ("Roberts ME", "pulmonology ward", "Example Research Foundation", "competing interests"):
        assert gone not in kept.text
    assert kept.text.endswith("and should be confirmed.")


def test_jats_articleset_in_a_default_namespace() -> None:
    paper = read_jats((FIXTURES / "jats_pmc_articleset.xml").read_bytes())
    assert paper.metadata.title == "Methylated SEPT9 in plasma after colectomy"
    assert paper.metadata.doi == "10.5555/md.fixture.0043"  # from a doi.org link
    assert paper.metadata.pmcid == "PMC8888882" and paper.metadata.pmid is None
    assert paper.text.split("\n\n") == [
        "Methylated SEPT9 in plasma after colectomy",
        "Summary",
        "Plasma methylated SEPT9 fell below the detection limit within 7 days of curative resection in 27 "
        "of 30 patients.",
        "This brief report has no sections.",
        "Persistent SEPT9 methylation after surgery predicted recurrence.",
        "References",
        "Tóth K, et al. Plasma SEPT9. PLoS One. 2012;7:e46000.",
    ]
    assert [section.role for section in paper.sections] == ["title", "abstract", "body", "back_matter"]


def test_jats_character_entities_without_the_dtd() -> None:
    xml = b"""<?xml version="1.0"?>
<!DOCTYPE article PUBLIC "-//NLM//DTD JATS (Z39.96) Journal Archiving and Interchange DTD v1.3 20210610//EN"
  "https://jats.nlm.nih.gov/archiving/1.3/JATS-archivearticle1-3.dtd" [
  <!ENTITY assay "MethyLight">
]>
<article><body><p>Ages 50&ndash;75 years, &ge;10% methylated by &assay;, &unknown;done.</p>
</body></article>"""
    assert read_jats(xml).text == "Ages 50–75 years, ≥10% methylated by MethyLight, done."


def test_jats_does_not_resolve_external_entities_or_dtds(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT", encoding="utf-8")
    dtd = tmp_path / "evil.dtd"
    dtd.write_text('<!ENTITY leak "DTD-SECRET-CONTENT">', encoding="utf-8")
    documents = [
        '<!DOCTYPE article [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        "<article><body><p>Start &xxe; end.</p></body></article>",
        f'<!DOCTYPE article [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'
        f"<article><body><p>Start &xxe; end.</p></body></article>",
        f'<!DOCTYPE article SYSTEM "{dtd.as_uri()}"><article><body><p>Start &leak; end.</p></body></article>',
        f'<!DOCTYPE article [<!ENTITY % p SYSTEM "{dtd.as_uri()}"> %p;]>'
        f"<article><body><p>Start &leak; end.</p></body></article>",
        f'<article xmlns:xi="http://www.w3.org/2001/XInclude"><body><p>Start '
        f'<xi:include href="{secret.as_uri()}" parse="text"/> end.</p></body></article>',
    ]
    for document in documents:
        paper = read_jats(document.encode())
        assert paper.text == "Start end.", document
        assert "root:" not in paper.text and "SECRET" not in paper.text


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("not_an_article_pom.xml", "XML that is not a journal article (root element <project>)"),
        ("malformed_article.xml", "malformed XML at line 14, column 11: Opening and ending tag mismatch"),
    ],
)
def test_jats_unreadable_fixtures(name: str, reason: str) -> None:
    with pytest.raises(UnreadablePaperError) as caught:
        read_jats((FIXTURES / name).read_bytes())
    assert str(caught.value).startswith(reason)


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        (b"", "empty file"),
        (b"   \n", "empty file"),
        (b"not xml at all", "malformed XML at line 1, column 1: Start tag expected"),
        (b"<rss><channel><title>News</title></channel></rss>", "root element <rss>"),
        (b"<pmc-articleset><error>Not found</error></pmc-articleset>", "holds no <article>"),
        (
            b"<pmc-articleset><article><body><p>One.</p></body></article>"
            b"<article><body><p>Two.</p></body></article></pmc-articleset>",
            "holds 2 articles: save each article in its own file",
        ),
        (
            b"<article><front><article-meta><title-group><article-title>Only a title</article-title>"
            b"</title-group></article-meta></front><back><ref-list><ref><mixed-citation>A ref"
            b"</mixed-citation></ref></ref-list></back></article>",
            "JATS article with no text: it has no abstract and no body",
        ),
    ],
)
def test_jats_unreadable_reasons(xml: bytes, reason: str) -> None:
    with pytest.raises(UnreadablePaperError, match=re.escape(reason)):
        read_jats(xml)


def test_jats_oasis_tables_and_older_nlm_articles() -> None:
    xml = b"""<?xml version="1.0"?>
<!DOCTYPE article PUBLIC "-//NLM//DTD Journal Archiving and Interchange DTD v2.3 20070202//EN"
  "archivearticle.dtd">
<article xmlns:oasis="http://docs.oasis-open.org/ns/oasis-exchange/table" article-type="research-article">
<front><article-meta><article-id pub-id-type="pmc">PMC2000001</article-id>
<title-group><article-title>GSTP1 in urine</article-title></title-group></article-meta></front>
<body><sec><title>Results</title>
<p>Urine detected 75% of cancers<sup><xref ref-type="bibr" rid="B1">1</xref></sup>.</p>
<table-wrap><label>Table 2</label><caption><p>Urine results.</p></caption>
<oasis:table><oasis:tgroup cols="2"><oasis:thead><oasis:row><oasis:entry>Gene</oasis:entry>
<oasis:entry>Sensitivity</oasis:entry></oasis:row></oasis:thead><oasis:tbody><oasis:row>
<oasis:entry>GSTP1</oasis:entry>
<oasis:entry>75% (p = 2 &#x00D7; 10<sup>&#x2212;4</sup>)</oasis:entry></oasis:row></oasis:tbody>
</oasis:tgroup>
</oasis:table></table-wrap></sec></body>
<back><ref-list><ref id="B1"><label>1</label><citation citation-type="journal">Goessl C. Urine GSTP1.
</citation></ref></ref-list></back></article>"""
    paper = read_jats(xml)
    assert paper.metadata.pmcid == "PMC2000001"
    assert _paragraphs(paper, "Results") == [
        "Urine detected 75% of cancers.",
        "Table 2. Urine results.\nGene | Sensitivity\nGSTP1 | 75% (p = 2 × 10^−4)",
    ]
    assert _section(paper, "References") == "1. Goessl C. Urine GSTP1."


def test_sample_paper_reads_as_a_short_article() -> None:
    paper = read_jats(SAMPLE_PAPER.read_bytes())
    assert paper.metadata.doi == "10.5555/md.sample.0001"
    assert paper.metadata.pmid is None and paper.metadata.pmcid is None
    assert paper.metadata.title is not None and paper.metadata.title.startswith("PAX1 and ZNF582 methylation")
    kept, omitted = omit_back_matter(paper)
    assert 800 <= len(kept.text.split()) <= 1200
    assert omitted.sections == ("Acknowledgements", "References", "Author notes")
    _assert_no_citation_noise(kept.text)
    assert [section.title for section in kept.sections][1:] == [
        "Abstract",
        "Introduction",
        "Methods",
        "Participants and samples",
        "Methylation analysis",
        "Statistical analysis",
        "Results",
        "Discussion",
    ]
    assert "Either gene methylated | 93 | 89.4 (82.0–94.0) | 75.0 (71.1–78.6) | 0.89" in kept.text.split("\n")
    assert "a sensitivity of 89.4% (95% CI 82.0% to 94.0%), at a specificity of 75.0%" in kept.text


# --- HTML -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def publisher_page() -> ReadPaper:
    return read_html((FIXTURES / "publisher_article_page.html").read_bytes())


def test_html_metadata_from_meta_tags(publisher_page: ReadPaper) -> None:
    assert publisher_page.format == "html" and publisher_page.reader == HTML_READER == "html/1"
    assert publisher_page.metadata.title == "NDRG4 and BMP3 methylation in stool DNA for colorectal neoplasia"
    assert publisher_page.metadata.doi == "10.5555/md.fixture.0044"
    assert publisher_page.metadata.pmid == "38888884"
    assert publisher_page.encoding == "utf-8"


def test_html_sections_with_roles(publisher_page: ReadPaper) -> None:
    assert [(section.title, section.role) for section in publisher_page.sections] == [
        ("NDRG4 and BMP3 methylation in stool DNA for colorectal neoplasia", "title"),
        ("Abstract", "abstract"),
        ("Introduction", "body"),
        ("Methods", "body"),
        ("Participants", "body"),
        ("Assays", "body"),
        ("Results", "body"),
        ("Discussion", "body"),
        ("Acknowledgements", "back_matter"),
        ("References", "back_matter"),
    ]


def test_html_keeps_the_article_text_only(publisher_page: ReadPaper) -> None:
    text = publisher_page.text
    for furniture in (
        "cookies",
        "Accept all",
        "Browse articles",
        "Submit manuscript",
        "tracking text",
        "font-family",
        "Share this article",
        "Related articles",
        "You may also like",
        "Blood-based screening",
        "Advertisement",
        "All rights reserved",
        "Maria Rossi",
        "Published: 02 May",
        "Journal of Fixture Epigenetics",
    ):
        assert furniture not in text, furniture
    assert split_sentences(_section(publisher_page, "Introduction")) == [
        "Colorectal cancer screening reduces mortality.",
        "Faecal immunochemical tests miss many advanced adenomas.",
        "Methylated NDRG4 was first described in stool by Melotte and colleagues.",
    ]
    assert _paragraphs(publisher_page, "Assays") == [
        "Stool DNA was captured with sequence-specific probes, bisulfite treated and analysed by "
        "quantitative allele-specific real-time target and signal amplification (QuARTS).\n"
        "The cut-off was fixed before unblinding.",
        "NDRG4 promoter: 8 CpG sites\nBMP3 promoter: 6 CpG sites",
    ]
    assert _section(publisher_page, "Discussion") == (
        "The test outperformed faecal immunochemical testing for adenomas, as reported in larger cohorts, "
        "and the cost per test remains the main obstacle."
    )
    _assert_no_citation_noise(omit_back_matter(publisher_page)[0].text)


def test_html_table_as_rows(publisher_page: ReadPaper) -> None:
    assert _paragraphs(publisher_page, "Results") == [
        "Sensitivity for cancer was 88% (95% CI 77% to 94%) and specificity 90% (see Table 1).",
        "Table 1. Detection by lesion type\n"
        "Lesion | n | Detected (%)\n"
        "Cancer | 62 | 88\n"
        "Advanced adenoma | 118 | 41\n"
        "No neoplasia | 300 | 10",
        "a False positives, mostly in people over 70.",
    ]


def test_html_back_matter_is_left_out(publisher_page: ReadPaper) -> None:
    assert _section(publisher_page, "References").split("\n") == [
        "1. Siegel RL, et al. Cancer statistics. CA Cancer J Clin. 2023;73:17.",
        "2. Imperiale TF, et al. Multitarget stool DNA testing. N Engl J Med. 2014;370:1287.",
    ]
    kept, omitted = omit_back_matter(publisher_page)
    assert omitted.sections == ("Acknowledgements", "References")
    assert omitted.tokens > 20
    assert "Siegel" not in kept.text and "endoscopy nurses" not in kept.text
    assert kept.text.endswith("remains the main obstacle.")


_BODY = (
    "<p>Promoter methylation of MGMT predicts benefit from temozolomide in glioblastoma, and the assay "
    "is now part of routine neuropathology in many centres. We measured it by pyrosequencing of four "
    "CpG sites in 206 tumours and compared the result with methylation-specific PCR.</p>"
    "<p>Agreement between the two assays was 91%, and discordant cases clustered near the cut-off.</p>"
)


def _page(body: str, head: str = "") -> bytes:
    return f"<html><head>{head}</head><body>{body}</body></html>".encode()


def test_html_without_semantic_markup_finds_the_densest_block() -> None:
    page = _page(
        '<div class="top"><a href="/">Home</a> <a href="/a">About</a></div>'
        f'<div class="wrap"><div class="col"><h1>MGMT by pyrosequencing</h1>{_BODY}'
        "<h2>References</h2><ol><li>Hegi ME, et al. N Engl J Med. 2005.</li></ol></div></div>",
        head="<title>MGMT by pyrosequencing | Example</title>",
    )
    paper = read_html(page)
    assert paper.metadata.title == "MGMT by pyrosequencing"  # the h1, not the <title> with its suffix
    assert "Home" not in paper.text and "About" not in paper.text
    assert [(section.title, section.role) for section in paper.sections] == [
        ("MGMT by pyrosequencing", "title"),
        ("", "body"),
        ("References", "back_matter"),
    ]


def test_html_pmc_style_citations_and_abstract_by_class() -> None:
    page = _page(
        '<main><section class="abstract" id="abstract1"><p>GSTP1 was hypermethylated in 91% of cancer '
        "biopsies and in 6% of benign biopsies, and urine detected 75% of cancers.</p></section>"
        "<section><h2>Results</h2><p>Urine testing was specific "
        '(<a href="#R12" class="usa-link" aria-describedby="R12">12</a>, '
        '<a href="#R13" class="usa-link">13</a>) and exceeded 10<sup>6</sup> copies in '
        '<a href="#F2" class="usa-link">Figure 2</a>; see also '
        '<a href="https://doi.org/10.5555/md.other">another paper</a>. Our data agree with earlier '
        'work.<sup><a href="#bib4">4</a>&#8211;<a href="#bib6">6</a></sup></p></section></main>'
    )
    paper = read_html(page)
    assert [(section.title, section.role) for section in paper.sections] == [
        ("Abstract", "abstract"),
        ("Results", "body"),
    ]
    assert _section(paper, "Results") == (
        "Urine testing was specific and exceeded 10^6 copies in Figure 2; see also another paper. "
        "Our data agree with earlier work."
    )


def test_html_reference_list_by_class_and_identifiers_from_text() -> None:
    page = _page(
        f"<main>{_BODY}<p>Data: doi:10.5555/md.fixture.0045 (PMID: 12345678).</p>"
        '<ol class="ref-list"><li>Esteller M, et al. doi:10.1056/not.this.one</li></ol></main>',
        head="<title>A page title</title>",
    )
    paper = read_html(page)
    assert paper.metadata.title == "A page title"
    assert paper.metadata.doi == "10.5555/md.fixture.0045"  # not the reference's DOI
    assert paper.metadata.pmid == "12345678"
    assert paper.sections[-1].title == "References" and paper.sections[-1].role == "back_matter"
    assert "Esteller" not in omit_back_matter(paper)[0].text


def test_html_a_badly_named_wrapper_is_not_furniture() -> None:
    paper = read_html(_page(f'<main><div class="has-sidebar related-layout">{_BODY}</div></main>'))
    assert "Agreement between the two assays was 91%" in paper.text


def test_html_encodings() -> None:
    text = "Méthylation of the promoter – 5′ region. " * 10
    declared_cp1252 = (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252"></head>'
        f"<body><main><p>{text.replace('′', '’')}</p></main></body></html>"
    ).encode("cp1252")
    undeclared_utf8 = _page(f"<main><p>{text}</p></main>")
    bom_utf16 = ("\ufeff" + _page(f"<main><p>{text}</p></main>").decode()).encode("utf-16")
    assert "Méthylation of the promoter – 5’ region." in read_html(declared_cp1252).text
    assert "Méthylation of the promoter – 5′ region." in read_html(undeclared_utf8).text
    assert "Méthylation of the promoter – 5′ region." in read_html(bom_utf16).text
    undeclared_cp1252 = _page(f"<main><p>{text.replace('′', '')}</p></main>").decode().encode("cp1252")
    assert "Méthylation of the promoter – 5 region." in read_html(undeclared_cp1252).text


@pytest.mark.parametrize(
    ("page", "reason"),
    [
        ((FIXTURES / "navigation_only_page.html").read_bytes(), "HTML page with no article text: 0 words"),
        (b"", "empty file"),
        (_page("<main><p>Page not found.</p></main>"), "HTML page with no article text: 3 words"),
        (_page('<div id="cookie-consent"><p>We use cookies.</p></div><script>var x = 1;</script>'), "text"),
    ],
)
def test_html_unreadable_reasons(page: bytes, reason: str) -> None:
    with pytest.raises(UnreadablePaperError, match=re.escape(reason)):
        read_html(page)
