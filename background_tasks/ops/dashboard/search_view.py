"""The Documents section's search box and One document's related documents.

The search is the store's (``DocumentStore.search``, as ``midas search`` and ``GET /search``):
a mode (hybrid, keyword, semantic) and the filters by type, date, source and status; one hit
per document, its best passage, how many more matched. Related documents are the nearest
document vectors (``DocumentStore.related``), near-duplicates flagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import streamlit as st

from background_tasks.errors import InvalidQuery
from background_tasks.ops import dashboard_data as dd
from background_tasks.ops.dashboard.view import md, open_document
from background_tasks.statuses import SearchStatus

MODES = ("hybrid", "keyword", "semantic")
ANY = "any"


def _where(hit: dict) -> str:
    """ "page 10-11, chunks 14-15, 3 more passages" for a hit."""
    pages, chunks = hit.get("pages") or [], hit.get("chunks") or [hit["chunk_index"]]
    where = [f"page {pages[0]}" if len(pages) == 1 else f"pages {pages[0]}–{pages[-1]}"] if pages else []
    where.append(f"chunk {chunks[0]}" if len(chunks) == 1 else f"chunks {chunks[0]}–{chunks[-1]}")
    where += [f"{hit['more']} more passage{'s' if hit['more'] > 1 else ''}"] if hit["more"] else []
    return ", ".join(where)


def _filters(file_types: Sequence[str]) -> dict:
    """The filter widgets, folded away; their values as ``search_documents`` arguments."""
    with st.expander("Filters: type, date, source, status"):
        c1, c2, c3, c4 = st.columns(4)
        ftype = c1.selectbox("Type", (ANY, *file_types), key="doc_search_type")
        status = c2.selectbox("Status", (ANY, *(s.value for s in SearchStatus)), key="doc_search_status",
                              help="complete: read without warnings; warnings: read with warnings; "
                              "ocr_pending: a long scan whose OCR still runs")  # fmt: skip
        dated = "the document's own date when it has one, else the day MIDAS stored it"
        since = c3.date_input("Dated from", value=None, key="doc_search_since", min_value=date(1900, 1, 1), help=dated)
        until = c4.date_input("Dated until", value=None, key="doc_search_until", min_value=date(1900, 1, 1), help=dated)
        source = st.text_input(
            "Source", key="doc_search_source", placeholder="a folder, s3://bucket/prefix, mail or mail:ACCOUNT",
            help="a folder the file was seen in, an S3 key prefix, every mail account, or one",
        )  # fmt: skip
    return {
        "file_type": None if ftype == ANY else ftype,
        "status": None if status == ANY else status,
        "since": since,
        "until": until,
        "source": source.strip() or None,
    }


def search_panel(url: str, file_types: Sequence[str]) -> None:
    """Query, mode and filters; the hits with their snippets and an Open button each."""
    query = st.text_input('Words, "a phrase", -excluded, or a question', key="doc_query")
    mode = st.radio("Match", MODES, horizontal=True, key="doc_search_mode",
                    help="hybrid: words and meaning; keyword: the words; semantic: the meaning")  # fmt: skip
    filters = _filters(file_types)
    if not query.strip():
        return
    try:
        hits = dd.search_documents(url, query, limit=20, mode=mode, **filters)
    except InvalidQuery as exc:
        st.warning(md(exc.message))
        return
    if hits.notice:
        st.info(md(hits.notice))
    if not hits:
        st.info("Nothing found.")
    for hit in hits:
        st.markdown(f"**{md(hit['name'])}** (document {hit['document_id']}, {_where(hit)})")
        st.button("Open", key=f"open_hit_{hit['document_id']}_{hit['chunk_index']}", on_click=open_document,
                  args=(hit["document_id"],), help="Show this document in One document, below")  # fmt: skip
        if hit.get("origin_text"):  # from a mail account (or another source): where it came from
            st.caption(md(hit["origin_text"]))
        st.html(f"<div class='midas-snippet'>{hit['snippet_html']}</div>")


def related_panel(url: str, document_id: int) -> None:
    """The 5 documents nearest in meaning, near-duplicates (the same text in another file) flagged."""
    found = dd.related_documents(url, document_id, limit=5)
    st.markdown("**Related documents**")
    if found is None:
        st.caption("Not embedded yet (or embeddings are off): related documents appear once it is.")
        return
    if not found:
        st.caption("No other document is embedded to compare it with.")
        return
    for other in found:
        left, right = st.columns((5, 1))
        flag = " · **near-duplicate**" if other["near_duplicate"] else ""
        left.markdown(
            f"{md(other['name'] or other['path'] or '–')} (document {other['document_id']}, "
            f"{md(other['file_type'] or '–')}, similarity {other['similarity']:.2f}){flag}"
        )
        right.button("Open", key=f"open_related_{document_id}_{other['document_id']}", on_click=open_document,
                     args=(other["document_id"],))  # fmt: skip
