"""Reading a JATS (or older NLM) XML article, as PubMed Central Open Access serves it.

The model: an `<article>` (the root, or the one article in a `<pmc-articleset>`) has front matter,
a body of nested `<sec>`s and back matter. The reader turns it into the shared `ReadPaper` shape:

- the title (`article-title`, with `subtitle`), then each abstract as an `abstract` section (a
  structured abstract's parts as paragraphs "Background: ..."); translated, graphical and teaser
  abstracts are left out;
- the body's sections in document order, nested ones flattened: every `<sec>` with a title is its own
  section headed by its label and title ("2.1 Study population"); its role follows the heading
  (`role_of_heading`), and everything under a back-matter section is back matter too;
- paragraphs as paragraphs, lists as lines, tables as their label and caption, one line per row
  (cells joined by " | ") and their footnotes, figures as their label and caption, formulas as the
  text of their MathML (or TeX where there is no MathML);
- the back matter (`ref-list`, `ack`, `fn-group`, `notes`, `glossary`, and the front's author notes
  and funding, placed at the end) as `back_matter` sections, so `omit_back_matter` can leave them
  out; appendices and `<sec>`s in `<back>` take the role of their heading.

Citation markers (`xref ref-type="bibr"`) go with their brackets (see `markup_text`); cross-references
to figures, tables and sections keep their text ("Figure 2"); footnote and affiliation markers go.

Untrusted input: the parser loads no DTD, resolves no entities and reaches no network, so a DOCTYPE
naming the JATS DTD is neither fetched nor needed, and an external entity (`<!ENTITY x SYSTEM
"file:///etc/passwd">`) stays unread. Character entities the DTD would have defined (`&ndash;`) are
spelled out from the HTML5 entity list, plain-text entities declared in the document's internal subset
are spelled out, and any other entity is dropped. Element namespaces are ignored, so un-namespaced
JATS and JATS in a default namespace read the same.
"""

from __future__ import annotations

import html.entities
import re
from collections.abc import Iterator

from lxml import etree

from methyl_distill.readers.document import (
    DocumentBuilder,
    PaperMetadata,
    ReadPaper,
    SectionRole,
    UnreadablePaperError,
    clean_doi,
    role_of_heading,
)
from methyl_distill.readers.markup_text import (
    LINE_BREAK,
    citation_placeholder,
    exponent,
    finish_inline,
    local_name,
    table_rows,
)

__all__ = ["READER", "read_jats"]

READER = "jats/1"

# Cross-references whose text is a marker, not words: they go.
_MARKER_XREFS = frozenset({"fn", "table-fn", "aff", "corresp", "author-notes"})
# Elements whose text is not reading text.
_SKIPPED = frozenset(
    {
        "graphic",
        "inline-graphic",
        "media",
        "object-id",
        "alt-text",
        "long-desc",
        "fn",
        "sec-meta",
        "permissions",
        "attrib",
        "processing-meta",
    }
)
# Paragraph-level elements that may sit inside a `<p>` and then split it.
_BLOCKS = frozenset(
    {
        "list",
        "table-wrap",
        "table-wrap-group",
        "fig",
        "fig-group",
        "disp-quote",
        "boxed-text",
        "def-list",
        "statement",
        "preformat",
        "code",
        "supplementary-material",
        "speech",
        "verse-group",
        "chem-struct-wrap",
        "array",
    }
)
_FORMULAS = frozenset({"disp-formula", "disp-formula-group"})
# Elements that only hold paragraphs, footnotes or sections.
_CONTAINERS = frozenset(
    {
        "sec",
        "fn-group",
        "table-wrap-foot",
        "notes",
        "ack",
        "glossary",
        "app",
        "bio",
        "author-notes",
        "caption",
        "floats-group",
        "list-item",
        "def",
    }
)
_PARAGRAPH_LIKE = _BLOCKS | _FORMULAS | {"p", "fn", "sec", "fn-group", "title", "list"}
# Abstracts that repeat or stand beside the real one.
_SKIPPED_ABSTRACTS = frozenset({"graphical", "teaser", "toc", "web-summary", "short", "precis"})
# `sec-type` values that mark back matter whatever the title says.
_BACK_MATTER_SEC_TYPES = frozenset(
    {"supplementary-material", "coi-statement", "funding", "author-contributions", "acknowledgments"}
)
_XML_ERROR_POSITION = re.compile(r",? line \d+, column \d+$")
_PMCID_DIGITS = re.compile(r"\d+")


def read_jats(data: bytes) -> ReadPaper:
    """The text, sections and identifiers of a JATS XML article; `UnreadablePaperError` when `data`
    is not well-formed XML, not a journal article, or an article with no abstract or body text."""
    article = _the_article(_parse(data))
    reader = _ArticleReader(article)
    builder = DocumentBuilder()
    front = _child(article, "front")
    article_meta = _child(front, "article-meta") if front is not None else None
    title = reader.title(article_meta)
    builder.add(title, "", role="title")
    if article_meta is not None:
        for heading, body in reader.abstracts(article_meta):
            builder.add(heading, body, role="abstract")
    body_element = _child(article, "body")
    if body_element is not None:
        reader.add_container(builder, body_element, "body")
    floats = _child(article, "floats-group")
    if floats is not None:
        builder.add("Figures and tables", "\n\n".join(reader.blocks(floats)), role="body")
    back = _child(article, "back")
    if back is not None:
        reader.add_back(builder, back)
    if article_meta is not None:
        reader.add_front_notes(builder, article_meta)
    if not any(section.role in ("abstract", "body") for section in builder.sections()):
        raise UnreadablePaperError(
            "JATS article with no text: it has no abstract and no body (PubMed Central serves some "
            "articles as scanned pages only; use the PDF)"
        )
    return ReadPaper(
        text=builder.text(),
        sections=builder.sections(),
        metadata=_metadata(article_meta, title),
        format="jats",
        reader=READER,
    )


# --- parsing ----------------------------------------------------------------------------------------


def _parse(data: bytes) -> etree._Element:
    if not data.strip():
        raise UnreadablePaperError("empty file: no XML to read")
    # A parser per call: lxml parsers must not be shared between threads.
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as error:
        line, column = error.position
        message = _XML_ERROR_POSITION.sub("", error.msg or str(error)).strip()
        raise UnreadablePaperError(f"malformed XML at line {line}, column {column}: {message}") from None


def _the_article(root: etree._Element) -> etree._Element:
    """The `<article>` at the root or in a `<pmc-articleset>`, with element namespaces dropped."""
    name = local_name(root)
    if name == "article":
        article = root
    elif name in ("pmc-articleset", "articles", "article-set"):
        articles = [child for child in root if local_name(child) == "article"]
        if not articles:
            raise UnreadablePaperError(f"XML <{name}> that holds no <article>: no journal article to read")
        if len(articles) > 1:
            raise UnreadablePaperError(
                f"XML <{name}> that holds {len(articles)} articles: save each article in its own file"
            )
        article = articles[0]
    else:
        raise UnreadablePaperError(
            f"XML that is not a journal article (root element <{name}>): expected JATS XML with an "
            "<article> root, as PubMed Central serves it"
        )
    for element in article.iter():
        if isinstance(element.tag, str) and element.tag.startswith("{"):
            element.tag = local_name(element)
    return article


def _child(parent: etree._Element, name: str) -> etree._Element | None:
    return next((child for child in parent if local_name(child) == name), None)


def _children(parent: etree._Element, name: str) -> Iterator[etree._Element]:
    return (child for child in parent if local_name(child) == name)


def _attribute(element: etree._Element, name: str) -> str:
    """An attribute by its local name, whatever its namespace (`xlink:href`, `href`)."""
    for key, value in element.attrib.items():
        if str(key).rsplit("}", 1)[-1] == name:
            return str(value)
    return ""


def _joined(*parts: str) -> str:
    """Label and title or caption joined as a reader would say them: "Table 1. Caption."."""
    parts = tuple(part for part in (" ".join(part.split()) for part in parts) if part)
    text = ""
    for part in parts:
        if not text:
            text = part
        elif text[-1] in ".:;!?":
            text = f"{text} {part}"
        else:
            text = f"{text}. {part}"
    return text


def _math_group(text: str) -> str:
    """A formula part as an operand: bracketed unless it is one number or name."""
    return text if re.fullmatch(r"[\w.]+", text) else f"({text})"


# --- metadata ---------------------------------------------------------------------------------------


def _metadata(article_meta: etree._Element | None, title: str) -> PaperMetadata:
    doi = pmid = pmcid = None
    if article_meta is not None:
        for article_id in _children(article_meta, "article-id"):
            kind = _attribute(article_id, "pub-id-type").lower()
            value = " ".join("".join(article_id.itertext()).split())
            if kind == "doi" and doi is None:
                doi = clean_doi(value)
            elif kind == "pmid" and pmid is None and value.isdigit():
                pmid = value
            elif kind in ("pmc", "pmcid") and pmcid is None:
                digits = _PMCID_DIGITS.search(value)
                pmcid = f"PMC{digits.group()}" if digits else None
    return PaperMetadata(title=title or None, doi=doi, pmid=pmid, pmcid=pmcid)


# --- text -------------------------------------------------------------------------------------------


class _ArticleReader:
    """Flattens one article's elements into paragraphs and sections."""

    def __init__(self, article: etree._Element) -> None:
        self._entities = self._declared_entities(article)

    @staticmethod
    def _declared_entities(article: etree._Element) -> dict[str, str]:
        """Plain-text entities from the document's internal subset (never external ones)."""
        dtd = article.getroottree().docinfo.internalDTD
        if dtd is None:
            return {}
        return {
            str(entity.name): str(entity.content)
            for entity in dtd.iterentities()
            if entity.system_url is None
            and entity.content is not None
            and not set("&<%") & set(entity.content)
        }

    def _entity_text(self, entity: etree._Element) -> str:
        name = str(entity.text or "").strip("&;")
        if name in self._entities:
            return self._entities[name]
        if name.startswith("#"):  # numeric references are resolved by the parser; kept for safety
            try:
                return chr(int(name[2:], 16) if name[1:2] in "xX" else int(name[1:]))
            except (ValueError, OverflowError):
                return ""
        return html.entities.html5.get(f"{name};", "")

    # inline text

    def inline(self, element: etree._Element) -> str:
        """The text of an element as one paragraph (line breaks only at display formulas)."""
        pieces: list[str] = []
        self._append_content(element, pieces)
        return finish_inline(pieces)

    def _append_content(self, element: etree._Element, pieces: list[str]) -> None:
        if element.text and not isinstance(element, etree._Entity):
            pieces.append(element.text)
        for child in element:
            self._append_element(child, pieces)
            if child.tail:
                pieces.append(child.tail)

    def _append_element(self, element: etree._Element, pieces: list[str]) -> None:
        if isinstance(element, etree._Entity):
            pieces.append(self._entity_text(element))
            return
        name = local_name(element)
        if not name or name in _SKIPPED:
            return
        if name == "xref":
            kind = _attribute(element, "ref-type")
            if kind == "bibr":
                pieces.append(citation_placeholder("".join(element.itertext())))
            elif kind not in _MARKER_XREFS:
                self._append_content(element, pieces)
        elif name in ("inline-formula", "alternatives", "math", "tex-math"):
            pieces.append(self._formula(element))
        elif name in _FORMULAS:
            pieces.extend((LINE_BREAK, self._formula(element), LINE_BREAK))
        elif name == "break":
            pieces.append(" ")
        elif name == "sup" and (power := exponent(pieces, element)):
            pieces.append(power)
        elif name == "name":
            # <name><surname>Roberts</surname><given-names>ME</given-names></name>: "Roberts ME".
            pieces.append(" ".join(self.inline(part) for part in element if local_name(part)))
        elif name in _BLOCKS or name == "p":
            # Inside a title or table cell: run the paragraph's text in, separated by spaces.
            pieces.extend((" ", " ".join(self.blocks_of(element)), " "))
        else:
            self._append_content(element, pieces)

    def _formula(self, element: etree._Element) -> str:
        """A formula's text: its label and the MathML's characters, else its TeX, else its own text."""
        label = _child(element, "label")
        math = next((node for node in element.iter("math") if isinstance(node.tag, str)), None)
        if math is not None:
            body = self._math_text(math)
        else:
            tex = next(element.iter("tex-math"), None)
            body = "".join(tex.itertext()) if tex is not None else self._plain(element, skip={"label"})
        body = " ".join(body.split())
        if label is not None:
            return f"{body} {' '.join(''.join(label.itertext()).split())}".strip()
        return body

    def _math_text(self, node: etree._Element) -> str:
        """Presentation MathML as linear text: powers as "^", fractions with "/", roots with "√"."""
        if isinstance(node, etree._Entity):
            return self._entity_text(node)
        name = local_name(node)
        if name in ("annotation", "annotation-xml") or not name:
            return ""
        if len(node) == 0:
            return " ".join((node.text or "").split())
        if name == "semantics":
            return self._math_text(node[0])
        parts = [self._math_text(child) for child in node]
        if name == "msup" and len(parts) == 2:
            return f"{parts[0]}^{_math_group(parts[1])}"
        if name == "msubsup" and len(parts) == 3:
            return f"{parts[0]}{parts[1]}^{_math_group(parts[2])}"
        if name == "mfrac" and len(parts) == 2:
            return f"{_math_group(parts[0])}/{_math_group(parts[1])}"
        if name == "msqrt":
            return f"√{_math_group(''.join(parts))}"
        return " ".join((node.text or "").split()) + "".join(parts)

    def _plain(self, element: etree._Element, skip: set[str]) -> str:
        pieces: list[str] = []
        if element.text:
            pieces.append(element.text)
        for child in element:
            if local_name(child) not in skip:
                self._append_element(child, pieces)
            if child.tail:
                pieces.append(child.tail)
        return "".join(pieces)

    # blocks

    def blocks(self, container: etree._Element) -> list[str]:
        """The paragraphs of a container's children, sub-sections' titles and text included."""
        blocks: list[str] = []
        for child in container:
            name = local_name(child)
            if name in ("title", "label", "sec-meta", "caption"):
                continue
            if name == "sec":
                heading = self.heading(child)
                blocks.extend([heading, *self.blocks(child)] if heading else self.blocks(child))
            else:
                blocks.extend(self.blocks_of(child))
        return [block for block in blocks if block]

    def blocks_of(self, element: etree._Element) -> list[str]:
        """The paragraphs one element makes."""
        if isinstance(element, etree._Entity):
            return [self._entity_text(element)]
        name = local_name(element)
        if name == "fn":
            # A footnote as its label and text: "a Adjusted for age."
            label = self._text_of_child(element, "label")
            return [" ".join(part for part in (label, " ".join(self.blocks(element))) if part)]
        if not name or name in _SKIPPED:
            return []
        if name == "p":
            return self._paragraph(element)
        if name == "list":
            return [self._list(element)]
        if name == "def-list":
            return [self._definitions(element)]
        if name == "table-wrap":
            return [self._table(element)]
        if name in ("fig", "supplementary-material", "media", "chem-struct-wrap"):
            return [self._captioned(element)]
        if name in _FORMULAS:
            return [self._formula(element)]
        if name in ("preformat", "code"):
            return ["\n".join(" ".join(line.split()) for line in "".join(element.itertext()).splitlines())]
        if name in ("table-wrap-group", "fig-group", "boxed-text", "statement", "disp-quote", "speech"):
            head = _joined(self._text_of_child(element, "label"), self._text_of_child(element, "title"))
            caption = self._caption(element)
            return [block for block in (head, caption, *self.blocks(element)) if block]
        if name == "ref-list":
            return self._references(element)
        if name in _CONTAINERS or any(local_name(child) in _PARAGRAPH_LIKE for child in element):
            return self.blocks(element)
        text = self.inline(element)
        return [text] if text else []

    def _paragraph(self, paragraph: etree._Element) -> list[str]:
        """A `<p>`, split where a list, table or figure sits inside it."""
        blocks: list[str] = []
        pieces: list[str] = []
        if paragraph.text:
            pieces.append(paragraph.text)
        for child in paragraph:
            if local_name(child) in _BLOCKS:
                blocks.append(finish_inline(pieces))
                pieces = []
                blocks.extend(self.blocks_of(child))
            else:
                self._append_element(child, pieces)
            if child.tail:
                pieces.append(child.tail)
        blocks.append(finish_inline(pieces))
        return [block for block in blocks if block]

    def _list(self, list_element: etree._Element) -> str:
        ordered = _attribute(list_element, "list-type") in ("order", "arabic")
        lines = []
        for number, item in enumerate(_children(list_element, "list-item"), start=1):
            label = self._text_of_child(item, "label") or (f"{number}." if ordered else "")
            text = " ".join(
                block.replace("\n", " ")
                for child in item
                if local_name(child) not in ("label", "list")
                for block in self.blocks_of(child)
            )
            nested = [self._list(child) for child in _children(item, "list")]
            lines.append(f"{label} {text}".strip())
            lines.extend(nested)
        return "\n".join(line for line in lines if line)

    def _definitions(self, definitions: etree._Element) -> str:
        lines = [self._text_of_child(definitions, "title")]
        for item in _children(definitions, "def-item"):
            term = self._text_of_child(item, "term")
            meaning = " ".join(" ".join(self.blocks(part)) for part in _children(item, "def"))
            lines.append(f"{term}: {meaning}" if term and meaning else term or meaning)
        return "\n".join(line for line in lines if line)

    def _caption(self, element: etree._Element) -> str:
        caption = _child(element, "caption")
        if caption is None:
            return ""
        return _joined(self._text_of_child(caption, "title"), *self.blocks(caption))

    def _captioned(self, element: etree._Element) -> str:
        """A figure (or supplementary file) as its label and caption."""
        return _joined(self._text_of_child(element, "label"), self._caption(element))

    def _table(self, table_wrap: etree._Element) -> str:
        lines = [self._captioned(table_wrap)]
        for table in table_wrap.iter("table"):
            lines.extend(table_rows(table, self.inline))
        for foot in table_wrap.iter("table-wrap-foot"):
            lines.extend(self.blocks(foot))
        return "\n".join(line for line in lines if line)

    def _text_of_child(self, element: etree._Element, name: str) -> str:
        child = _child(element, name)
        return self.inline(child) if child is not None else ""

    # titles and headings

    def title(self, article_meta: etree._Element | None) -> str:
        if article_meta is None:
            return ""
        title_group = _child(article_meta, "title-group")
        if title_group is None:
            return ""
        title = self._text_of_child(title_group, "article-title")
        subtitle = self._text_of_child(title_group, "subtitle")
        return f"{title}: {subtitle}" if title and subtitle else title or subtitle

    def heading(self, element: etree._Element) -> str:
        """A section's label and title, "2.1 Study population"."""
        label = self._text_of_child(element, "label")
        title = self._text_of_child(element, "title")
        return " ".join(part for part in (label, title) if part)

    # sections

    def abstracts(self, article_meta: etree._Element) -> Iterator[tuple[str, str]]:
        for abstract in _children(article_meta, "abstract"):
            kind = _attribute(abstract, "abstract-type").lower()
            if kind in _SKIPPED_ABSTRACTS:
                continue
            default = (
                "Abstract" if kind in ("", "structured", "normal") else kind.replace("-", " ").capitalize()
            )
            heading = self._text_of_child(abstract, "title") or default
            paragraphs: list[str] = []
            for child in abstract:
                name = local_name(child)
                if name in ("title", "label"):
                    continue
                if name == "sec":
                    paragraphs.extend(self._abstract_part(child))
                else:
                    paragraphs.extend(self.blocks_of(child))
            yield heading, "\n\n".join(paragraphs)

    def _abstract_part(self, sec: etree._Element) -> list[str]:
        """A structured abstract's part: its first paragraph led by the part's title."""
        heading = self.heading(sec)
        paragraphs = self.blocks(sec)
        if heading and paragraphs:
            paragraphs[0] = f"{heading}: {paragraphs[0]}"
        elif heading:
            paragraphs = [heading]
        return paragraphs

    def add_container(self, builder: DocumentBuilder, container: etree._Element, role: SectionRole) -> None:
        """A body (or section) whose own paragraphs come first, untitled, then its sections."""
        intro: list[str] = []
        for child in container:
            name = local_name(child)
            if name in ("sec", "ref-list", "title", "label", "sec-meta"):
                continue
            intro.extend(self.blocks_of(child))
        builder.add("", "\n\n".join(intro), role=role)
        self._add_subsections(builder, container, role)

    def _add_subsections(
        self, builder: DocumentBuilder, container: etree._Element, role: SectionRole
    ) -> None:
        for child in container:
            name = local_name(child)
            if name == "sec":
                self._add_section(builder, child, role)
            elif name == "ref-list":
                self._add_references(builder, child)

    def _add_section(self, builder: DocumentBuilder, sec: etree._Element, parent_role: SectionRole) -> None:
        heading = self.heading(sec)
        role: SectionRole
        if parent_role == "back_matter" or _attribute(sec, "sec-type").lower() in _BACK_MATTER_SEC_TYPES:
            role = "back_matter"
        elif heading:
            role = role_of_heading(heading)
        else:
            role = parent_role
        paragraphs: list[str] = []
        for child in sec:
            if local_name(child) not in ("sec", "ref-list", "title", "label", "sec-meta"):
                paragraphs.extend(self.blocks_of(child))
        builder.add(heading, "\n\n".join(paragraphs), role=role)
        self._add_subsections(builder, sec, role)

    def _references(self, ref_list: etree._Element) -> list[str]:
        lines = []
        for child in ref_list:
            name = local_name(child)
            if name == "ref":
                lines.append(self._reference(child))
            elif name == "ref-list":
                lines.extend(self._references(child))
            elif name not in ("title", "label"):
                lines.extend(self.blocks_of(child))
        return [line for line in lines if line]

    def _reference(self, ref: etree._Element) -> str:
        label = self._text_of_child(ref, "label")
        citation = next(
            (
                child
                for child in ref.iter()
                if local_name(child) in ("mixed-citation", "element-citation", "nlm-citation", "citation")
            ),
            None,
        )
        if citation is None:
            text = self.inline(ref)
        elif local_name(citation) == "mixed-citation" or (citation.text or "").strip():
            text = self.inline(citation)
        else:
            text = self._structured_citation(citation)
        if not label or text.startswith(label):
            return text
        return f"{label}. {text}" if label.isdigit() else f"{label} {text}"

    def _structured_citation(self, citation: etree._Element) -> str:
        """An `element-citation`, which has no punctuation of its own: names, then the other parts."""
        parts = []
        for child in citation:
            if local_name(child) == "person-group":
                names = [" ".join(name.itertext()) for name in child if local_name(name) != ""]
                parts.append(", ".join(" ".join(name.split()) for name in names))
            else:
                parts.append(self.inline(child))
        return _joined(*parts)

    def _add_references(self, builder: DocumentBuilder, ref_list: etree._Element) -> None:
        heading = self.heading(ref_list) or "References"
        builder.add(heading, "\n".join(self._references(ref_list)), role="back_matter")

    def add_back(self, builder: DocumentBuilder, back: etree._Element) -> None:
        defaults = {
            "ack": "Acknowledgements",
            "fn-group": "Footnotes",
            "notes": "Notes",
            "glossary": "Abbreviations",
            "bio": "About the authors",
        }
        for child in back:
            name = local_name(child)
            if name == "ref-list":
                self._add_references(builder, child)
            elif name in defaults:
                heading = self.heading(child) or defaults[name]
                builder.add(heading, "\n\n".join(self.blocks(child)), role="back_matter")
            elif name == "sec":
                self._add_section(builder, child, "body")
            elif name == "app-group":
                heading = self.heading(child)
                builder.add(heading, "", role=role_of_heading(heading) if heading else "body")
                for part in child:
                    if local_name(part) in ("app", "sec"):
                        self._add_section(builder, part, "body")
            elif name == "app":
                self._add_section(builder, child, "body")

    def add_front_notes(self, builder: DocumentBuilder, article_meta: etree._Element) -> None:
        """Author notes, funding and notes from the front matter, as back matter at the end."""
        for child in article_meta:
            name = local_name(child)
            if name == "author-notes":
                builder.add("Author notes", "\n\n".join(self.blocks(child)), role="back_matter")
            elif name == "funding-group":
                statements = [self.inline(part) for part in child.iter("funding-statement")]
                text = "\n\n".join(statements) if any(statements) else self.inline(child)
                builder.add("Funding", text, role="back_matter")
