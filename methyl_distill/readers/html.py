"""Reading a saved article web page (publisher, PubMed Central or preprint server) as paper text.

The model: a page is the article's text wrapped in site furniture. The reader

1. reads the identifiers from the Highwire / Dublin Core / Open Graph meta tags (`citation_title`,
   `citation_doi`, `citation_pmid`, `dc.identifier`, `og:title`, ...), the title falling back to the
   article's first `<h1>`, then `<title>`;
2. removes what is never article text, wherever it is: scripts, styles, forms, buttons, `<nav>`,
   `<header>`, `<footer>`, `<aside>`, hidden elements and the ARIA landmarks for the same things;
3. picks the article: the `<article>`, `<main>` or `role="main"` element with the most paragraph
   text (an `<article>` over the `<main>` around it when it holds most of that text), else the block
   where paragraphs cluster (a paragraph scores for its parent, half for its grandparent);
4. removes, inside the article, blocks whose class or id names them as furniture (cookie and consent
   banners, share and social widgets, related or recommended articles, adverts, sidebars, toolbars),
   but never one that holds half the article's text, so a badly named wrapper cannot empty the page;
5. walks the article in document order: `<h1>`-`<h6>` start sections (role by `role_of_heading`; a
   heading below a back-matter heading stays back matter), paragraphs stay paragraphs, lists and
   `<pre>` become lines, tables become their caption and one line per row (cells joined by " | ").
   A block whose class or id marks it as the reference list (`references`, `ref-list`,
   `bibliography`) or acknowledgements is back matter; one marked as the abstract is the abstract.

Citation markers (links to `#ref12`, `#B12`, `#CR5`, `#bib3`, `role="doc-biblioref"`, and `<sup>`s
holding only such links) go with their brackets, as in JATS (see `markup_text`).

Encoding: libxml2 honours a byte-order mark and `<meta charset>`; a page that declares neither is read
as UTF-8 when it decodes as UTF-8, else as Windows-1252 (what browsers assume). The parser reaches no
network. A page with fewer than `MIN_ARTICLE_WORDS` words of article text is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import lxml.html
from lxml import etree

from methyl_distill.readers.document import (
    DocumentBuilder,
    PaperMetadata,
    ReadPaper,
    SectionRole,
    UnreadablePaperError,
    clean_doi,
    heading_key,
    identifiers_in_text,
    role_of_heading,
)
from methyl_distill.readers.markup_text import (
    LINE_BREAK,
    citation_placeholder,
    exponent,
    finish_inline,
    table_rows,
)

__all__ = ["MIN_ARTICLE_WORDS", "READER", "read_html"]

READER = "html/1"

# Fewer words than this outside the title and back matter is a page without an article (an error
# page, a login wall, a table of contents).
MIN_ARTICLE_WORDS = 40

# Elements that never hold article text.
_JUNK_TAGS = frozenset(
    {
        "script",
        "style",
        "noscript",
        "template",
        "iframe",
        "object",
        "embed",
        "canvas",
        "svg",
        "form",
        "button",
        "input",
        "select",
        "textarea",
        "nav",
        "header",
        "footer",
        "aside",
        "dialog",
        "menu",
        "link",
        "meta",
    }
)
_JUNK_ROLES = frozenset(
    {
        "navigation",
        "banner",
        "contentinfo",
        "complementary",
        "search",
        "dialog",
        "alertdialog",
        "menu",
        "menubar",
        "toolbar",
        "tablist",
        "button",
    }
)
# Class or id words of site furniture: at the start of a class/id or after "-"/"_", any ending
# ("related-articles", "c-article-recommendations", "cookieBanner").
_JUNK_PREFIXES = re.compile(
    r"(?:^|[-_])(?:cookie|consent|gdpr|share|sharing|social|related|recommend|advert|sponsor"
    r"|newsletter|subscribe|sidebar|breadcrumb|navbar|popup|toolbar|masthead|altmetric|skip-?link"
    r"|site-?header|site-?footer|pagination|jump-?to)",
    re.IGNORECASE,
)
# Whole class/id words of site furniture ("ad", "nav", "banner"), not prefixes ("adjusted", "navigator").
_JUNK_WORDS = re.compile(
    r"(?:^|[-_])(?:ads?|nav|menu|banner|comments?|login|metrics|footer|tools|print|promo|promotions?|modal)"
    r"(?:$|[-_])",
    re.IGNORECASE,
)
_REFERENCES = re.compile(r"references|ref-?list|reflist|bibliography|citation-?list", re.IGNORECASE)
_ACKNOWLEDGEMENTS = re.compile(r"(?:^|[-_])ack(?:nowledg\w*)?(?:$|[-_])", re.IGNORECASE)
_ABSTRACT = re.compile(r"(?:^|[-_])abstract(?:$|[-_])", re.IGNORECASE)
# Links to a reference: "#ref12", "#ref-CR5", "#bib3", "#cite_note-4", "#B12", "#CR5", "#R3", "#c12".
_REFERENCE_LINK = re.compile(
    r"^#(?:ref|bib|cit|reference|endnote|fn-?ref)\w*|^#(?:b|cr|r|c|en)\d+[a-z]?$", re.IGNORECASE
)
# Links to a table or article footnote ("#Tab1-fn1", "#tfn2", "#FN3") whose text is a marker ("a", "*").
_FOOTNOTE_LINK = re.compile(r"^#.*(?:fn|footnote|note)[-_]?\w*$", re.IGNORECASE)
_CITATION_CLASSES = re.compile(r"(?:^|[-_\s])(?:bibr|xref-bibr|citation-ref|ref-link)(?:$|[-_\s])", re.I)
_CITATION_SEPARATORS = re.compile(r"[\s,;\[\]()\u2010-\u2015-]*")
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_DECLARED_CHARSET = re.compile(rb"<meta[^>]+charset\s*=|^<\?xml[^>]+encoding\s*=", re.IGNORECASE)
_BLOCK_TAGS = frozenset(
    {
        "p",
        "div",
        "section",
        "article",
        "main",
        "body",
        "blockquote",
        "figure",
        "figcaption",
        "caption",
        "address",
        "details",
        "summary",
        "center",
        "dl",
        "dt",
        "dd",
        "fieldset",
        "hgroup",
        "hr",
        "li",
    }
)
_SKIPPED_TAGS = frozenset({"img", "picture", "video", "audio", "source", "track", "map", "area", "wbr"})
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_LISTS = frozenset({"ul", "ol"})
_META_TITLE = ("citation_title", "dc.title", "og:title", "twitter:title")
_META_DOI = ("citation_doi", "prism.doi", "bepress_citation_doi", "dc.identifier", "doi")
_META_PMID = ("citation_pmid", "ncbi_pmid", "pmid")
_META_PMCID = ("citation_pmcid", "ncbi_pmcid", "pmcid")
_DIGITS = re.compile(r"\d+")


def read_html(data: bytes) -> ReadPaper:
    """The article text, sections and identifiers of a saved article web page;
    `UnreadablePaperError` when the page has no article text."""
    document = _parse(data)
    meta = _meta_tags(document)
    first_heading = _first_article_heading(document)
    page_title = document.find("head/title")
    _remove_junk(document)
    content = _article_element(document)
    _remove_furniture(content)
    title = (
        _first_of(meta, _META_TITLE)
        or first_heading
        or (" ".join(page_title.text_content().split()) if page_title is not None else "")
    )
    walker = _ArticleWalker()
    walker.walk(content)
    builder = DocumentBuilder()
    builder.add(title, "", role="title")
    _add_sections(builder, walker.events, title)
    article_words = sum(
        len(builder.text()[section.start : section.end].split())
        for section in builder.sections()
        if section.role in ("abstract", "body")
    )
    if article_words < MIN_ARTICLE_WORDS:
        raise UnreadablePaperError(
            f"HTML page with no article text: {article_words} words outside navigation, headers, "
            "footers and sidebars (save the article's full-text page, or its PDF)"
        )
    text = builder.text()
    sections = builder.sections()
    article_text = "\n\n".join(
        text[section.start : section.end] for section in sections if section.role != "back_matter"
    )
    metadata = _metadata(meta, title).merged_with(identifiers_in_text(article_text))
    encoding = document.getroottree().docinfo.encoding
    return ReadPaper(
        text=text,
        sections=sections,
        metadata=metadata,
        format="html",
        reader=READER,
        encoding=encoding or None,
    )


# --- parsing ----------------------------------------------------------------------------------------


def _parse(data: bytes) -> lxml.html.HtmlElement:
    if not data.strip():
        raise UnreadablePaperError("empty file: no HTML to read")
    head = data[:4096]
    encoding = None
    has_bom = data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"))
    if not has_bom and not _DECLARED_CHARSET.search(head):
        try:
            data.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            encoding = "windows-1252"
    # A parser per call: lxml parsers must not be shared between threads.
    parser = lxml.html.HTMLParser(
        encoding=encoding, no_network=True, remove_comments=True, remove_pis=True, huge_tree=False
    )
    try:
        return lxml.html.document_fromstring(data, parser=parser)
    except (etree.ParserError, etree.XMLSyntaxError) as error:
        raise UnreadablePaperError(f"HTML that could not be parsed: {error}") from None


def _classes(element: etree._Element) -> list[str]:
    return [*str(element.get("class") or "").split(), *str(element.get("id") or "").split()]


def _drop(element: lxml.html.HtmlElement) -> None:
    """Remove an element but keep the text after it, which belongs to its parent."""
    if element.getparent() is not None:
        element.drop_tree()


def _keep_headings_only(header: lxml.html.HtmlElement) -> None:
    """Replace a section's or article's `<header>` by the headings in it (authors, dates and
    affiliations go)."""
    headings = [
        element
        for element in header.iter(*_HEADINGS)
        if not any(ancestor.tag in _HEADINGS for ancestor in element.iterancestors())
    ]
    for heading in headings:
        heading.tail = None
        header.addprevious(heading)
    _drop(header)


def _remove_junk(document: lxml.html.HtmlElement) -> None:
    for header in list(document.iter("header")):
        if any(ancestor.tag in ("article", "section", "main") for ancestor in header.iterancestors()):
            _keep_headings_only(header)
    junk = [
        element
        for element in document.iter()
        if isinstance(element.tag, str)
        and (
            element.tag in _JUNK_TAGS
            or str(element.get("role") or "").lower() in _JUNK_ROLES
            or element.get("hidden") is not None
            or str(element.get("aria-hidden") or "").lower() == "true"
            or _HIDDEN_STYLE.search(str(element.get("style") or ""))
        )
    ]
    for element in junk:
        _drop(element)


def _paragraph_text_length(element: etree._Element) -> int:
    return sum(len(" ".join(paragraph.text_content().split())) for paragraph in element.iter("p"))


def _article_element(document: lxml.html.HtmlElement) -> lxml.html.HtmlElement:
    """The element that holds the article (see the module docstring, step 3)."""
    articles = [(_paragraph_text_length(element), element) for element in document.iter("article")]
    mains = [
        (_paragraph_text_length(element), element)
        for element in document.iter()
        if isinstance(element.tag, str) and (element.tag == "main" or element.get("role") == "main")
    ]
    best_article = max(articles, key=lambda scored: scored[0], default=(0, None))
    best_main = max(mains, key=lambda scored: scored[0], default=(0, None))
    if best_article[1] is not None and best_article[0] > 0 and best_article[0] * 2 >= best_main[0]:
        return best_article[1]
    if best_main[1] is not None and best_main[0] > 0:
        return best_main[1]
    scores: dict[etree._Element, float] = {}
    for paragraph in document.iter("p"):
        length = len(" ".join(paragraph.text_content().split()))
        parent = paragraph.getparent()
        if parent is None:
            continue
        scores[parent] = scores.get(parent, 0.0) + length
        grandparent = parent.getparent()
        if grandparent is not None:
            scores[grandparent] = scores.get(grandparent, 0.0) + length / 2
    if scores:
        return max(scores.items(), key=lambda scored: scored[1])[0]
    body = document.find("body")
    return body if body is not None else document


def _is_furniture(element: etree._Element) -> bool:
    return any(_JUNK_PREFIXES.search(name) or _JUNK_WORDS.search(name) for name in _classes(element))


def _remove_furniture(content: lxml.html.HtmlElement) -> None:
    """Remove site furniture named by class or id inside the article, never half of its text."""
    total = len(" ".join(content.text_content().split()))
    stack = list(content)
    while stack:
        element = stack.pop()
        if not isinstance(element.tag, str):
            continue
        if _is_furniture(element) and len(" ".join(element.text_content().split())) * 2 < total:
            _drop(element)
        else:
            stack.extend(element)


# --- metadata ---------------------------------------------------------------------------------------


def _meta_tags(document: lxml.html.HtmlElement) -> dict[str, str]:
    """The first value of each named meta tag, names lower-cased."""
    meta: dict[str, str] = {}
    for element in document.iter("meta"):
        name = str(element.get("name") or element.get("property") or element.get("itemprop") or "").lower()
        content = " ".join(str(element.get("content") or "").split())
        if name and content:
            if name == "dc.identifier" and not clean_doi(content):
                continue
            meta.setdefault(name, content)
    return meta


def _first_of(meta: dict[str, str], names: tuple[str, ...]) -> str:
    return next((meta[name] for name in names if meta.get(name)), "")


def _first_article_heading(document: lxml.html.HtmlElement) -> str:
    """The first `<h1>` inside an article or main element, else the page's first `<h1>`."""
    headings = document.xpath("//article//h1 | //main//h1 | //*[@role='main']//h1") or document.xpath("//h1")
    for heading in headings:
        text = " ".join(heading.text_content().split())
        if text:
            return text
    return ""


def _metadata(meta: dict[str, str], title: str) -> PaperMetadata:
    pmid = _DIGITS.search(_first_of(meta, _META_PMID))
    pmcid = _DIGITS.search(_first_of(meta, _META_PMCID))
    return PaperMetadata(
        title=title or None,
        doi=clean_doi(_first_of(meta, _META_DOI)),
        pmid=pmid.group() if pmid else None,
        pmcid=f"PMC{pmcid.group()}" if pmcid else None,
    )


# --- the article's text -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Heading:
    level: int
    text: str
    role: SectionRole | None


@dataclass(frozen=True)
class _Block:
    text: str
    role: SectionRole | None
    default_title: str


def _forced_role(element: etree._Element) -> tuple[SectionRole, str] | None:
    """The role (and default heading) a block has by its class or id: references, acknowledgements,
    abstract."""
    names = _classes(element)
    if any(_REFERENCES.search(name) for name in names):
        return "back_matter", "References"
    if any(_ACKNOWLEDGEMENTS.search(name) for name in names):
        return "back_matter", "Acknowledgements"
    if any(_ABSTRACT.search(name) for name in names):
        return "abstract", "Abstract"
    return None


def _is_footnote_marker(element: etree._Element) -> bool:
    """A link to a footnote whose text is only its marker ("a", "*", "†")."""
    return (
        element.tag == "a"
        and _FOOTNOTE_LINK.match(str(element.get("href") or "")) is not None
        and len(element.text_content().strip()) <= 2
    )


def _is_citation(element: etree._Element) -> bool:
    """A link to a reference, or a `<sup>` that holds nothing but such links."""
    tag = element.tag
    if tag == "a":
        return bool(
            _REFERENCE_LINK.match(str(element.get("href") or ""))
            or str(element.get("role") or "").lower() == "doc-biblioref"
            or _CITATION_CLASSES.search(str(element.get("class") or ""))
        )
    if tag == "sup":
        links = [child for child in element.iter() if child is not element and isinstance(child.tag, str)]
        if not any(child.tag == "a" for child in links):
            return False
        if not all(child.tag != "a" or _is_citation(child) for child in links):
            return False
        outside_links = (element.text or "") + "".join(child.tail or "" for child in element)
        return _CITATION_SEPARATORS.fullmatch(outside_links) is not None
    return False


def _is_marker_only(element: etree._Element) -> bool:
    """A footnote marker link, or a `<sup>` holding only one."""
    if _is_footnote_marker(element):
        return True
    children = [child for child in element if isinstance(child.tag, str)]
    return (
        element.tag == "sup"
        and len(children) == 1
        and _is_footnote_marker(children[0])
        and not (element.text or "").strip()
        and not (children[0].tail or "").strip()
    )


@dataclass
class _ArticleWalker:
    """Walks the article in document order into headings and blocks of text."""

    events: list[_Heading | _Block] = field(default_factory=list)
    _pieces: list[str] = field(default_factory=list)
    _forced: list[tuple[SectionRole, str]] = field(default_factory=list)

    def walk(self, element: etree._Element) -> None:
        self._visit(element)
        self.walk_done()

    def walk_done(self) -> None:
        """Emit the text still pending."""
        self._flush()

    def _flush(self) -> None:
        text = finish_inline(self._pieces)
        self._pieces = []
        if text:
            self._emit_block(text)

    def _emit_block(self, text: str) -> None:
        role, default_title = self._forced[-1] if self._forced else (None, "")
        self.events.append(_Block(text, role, default_title))

    def visit_content(self, element: etree._Element, skip: frozenset[str] = frozenset()) -> None:
        """An element's text and children (those not in `skip`), with the children's tails."""
        if element.text:
            self._pieces.append(element.text)
        for child in element:
            if child.tag not in skip:
                self._visit(child)
            if child.tail:
                self._pieces.append(child.tail)

    def _visit(self, element: etree._Element) -> None:
        tag = element.tag
        if not isinstance(tag, str) or tag in _SKIPPED_TAGS:
            return
        if tag in _HEADINGS:
            self._flush()
            text = finish_inline(_inline_pieces(element)).replace("\n", " ")
            if text:
                heading_role = self._forced[-1][0] if self._forced else None
                self.events.append(_Heading(_HEADINGS[tag], text, heading_role))
            return
        if tag == "br":
            self._pieces.append(LINE_BREAK)
            return
        if _is_citation(element):
            self._pieces.append(citation_placeholder(element.text_content()))
            return
        if _is_marker_only(element):
            return
        if tag == "sup" and (power := exponent(self._pieces, element)):
            self._pieces.append(power)
            return
        forced = _forced_role(element)
        if tag in ("ul", "ol", "table", "pre") and forced is None:
            self._flush()
            self._emit_lines(element)
            return
        is_block = tag in _BLOCK_TAGS or forced is not None
        if is_block:
            self._flush()
        if forced is not None:
            self._forced.append(forced)
        if tag in ("ul", "ol", "table", "pre"):
            self._emit_lines(element)
        else:
            self.visit_content(element)
        if is_block:
            self._flush()
        if forced is not None:
            self._forced.pop()

    def _emit_lines(self, element: etree._Element) -> None:
        if element.tag == "table":
            lines = _table_lines(element)
        elif element.tag == "pre":
            lines = [" ".join(line.split()) for line in element.text_content().splitlines()]
        else:
            lines = _list_lines(element)
        text = "\n".join(line for line in lines if line)
        if text:
            self._emit_block(text)


def _inline_pieces(element: etree._Element) -> list[str]:
    """An element's text as inline pieces: citations as placeholders, `<br>` as line breaks."""
    pieces: list[str] = []
    if element.text:
        pieces.append(element.text)
    for child in element:
        tag = child.tag
        if isinstance(tag, str) and tag not in _SKIPPED_TAGS:
            if tag == "br":
                pieces.append(LINE_BREAK)
            elif _is_citation(child):
                pieces.append(citation_placeholder(child.text_content()))
            elif _is_marker_only(child):
                pass
            elif tag == "sup" and (power := exponent(pieces, child)):
                pieces.append(power)
            elif tag in _BLOCK_TAGS or tag in ("ul", "ol", "table"):
                pieces.extend((" ", *_inline_pieces(child), " "))
            else:
                pieces.extend(_inline_pieces(child))
        if child.tail:
            pieces.append(child.tail)
    return pieces


def _cell_text(cell: etree._Element) -> str:
    return finish_inline(_inline_pieces(cell)).replace("\n", " ")


def _table_lines(table: etree._Element) -> list[str]:
    caption = table.find("caption")
    lines = [_cell_text(caption)] if caption is not None else []
    return lines + table_rows(table, _cell_text)


def _list_lines(list_element: etree._Element) -> list[str]:
    """One line per item (numbered for `<ol>`), nested lists' items on their own lines after it."""
    ordered = list_element.tag == "ol"
    try:
        number = int(str(list_element.get("start") or 1))
    except ValueError:
        number = 1
    lines = []
    for item in list_element:
        if item.tag != "li":
            continue
        own = _ArticleWalker()
        own.visit_content(item, skip=_LISTS)
        own.walk_done()
        nested = [line for child in item if child.tag in _LISTS for line in _list_lines(child)]
        text = " ".join(event.text.replace("\n", " ") for event in own.events)
        if text:
            lines.append(f"{number}. {text}" if ordered and not text.startswith(f"{number}.") else text)
        lines.extend(nested)
        number += 1
    return lines


def _add_sections(builder: DocumentBuilder, events: list[_Heading | _Block], title: str) -> None:
    """Headed sections from the walk's events. A block forced to a role the current section does
    not have opens a section of its own ("References" for an unheaded reference list)."""
    heading = ""
    role: SectionRole = "body"
    blocks: list[str] = []
    back_matter_level: int | None = None
    title_key = heading_key(title)
    skipped_title = False

    def close() -> None:
        builder.add(heading, "\n\n".join(blocks), role=role)

    for event in events:
        if isinstance(event, _Heading):
            if not skipped_title and event.level <= 2 and heading_key(event.text) == title_key:
                skipped_title = True  # the page's own title, already the title section
                continue
            close()
            heading, blocks = event.text, []
            if back_matter_level is not None and event.level > back_matter_level:
                role = "back_matter"
            else:
                role = event.role or role_of_heading(event.text)
                back_matter_level = event.level if role == "back_matter" else None
        else:
            if event.role is not None and event.role != role:
                close()
                heading, blocks, role = event.default_title, [], event.role
            blocks.append(event.text)
    close()
