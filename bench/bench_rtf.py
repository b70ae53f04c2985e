"""RTF to text: MIDAS's tokenizer (``extractors/rtf/convert.py``) against striprtf, which MIDAS used before.

    python -m bench bench_rtf [--rounds 5]

Converts the shared corpus's RTF files and two generated large ones (a
2 MB letter of formatted paragraphs and tables; a 4 MB report whose bulk is
pictures in hex, as Word saves them) with both, taking
turns per file, and prints each one's best time, the ratio, and whether the
texts are equal (they must be: the tokenizer keeps striprtf's output).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from bench.common import corpus_files, print_table


def generated() -> dict[str, str]:
    """Two large RTF documents: formatted text, and text between big pictures."""
    paragraph = (
        r"\pard\plain\s1\ql\li0\ri0\sa160\sl259\slmult1\widctlpar\wrapdefault\aspalpha\aspnum\faauto\adjustright"
        r"\rin0\lin0\itap0\rtlch\fcs1\af0\afs22\alang1025\ltrch\fcs0\f0\fs22\lang1031\langfe1033\cgrid\langnp1031 "
        r"Die Gezeiten \'fcber dem Watt steigen im M\'e4rz um {\b\f1 4,2 m}, im April um 4,6 m.\par "
        r"\trowd\irow0\irowband0\ts11\trgaph108\trleft-108\trbrdrt\brdrs\brdrw10 \trbrdrl\brdrs\brdrw10 "
        r"\clvertalt\clbrdrt\brdrs\brdrw10 \clbrdrl\brdrs\brdrw10 \cltxlrtb\clftsWidth3\clwWidth4531\clshdrawnil "
        r"\cellx4423\pard\plain\intbl month\cell height\cell\row "
    )
    header = r"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0 Calibri;}{\f1\fcharset0 Arial;}}"
    picture_hex = "89504e470d0a1a0a" + "00ff7fa0" * 120_000
    lines = "\r\n".join(picture_hex[i : i + 128] for i in range(0, len(picture_hex), 128))
    picture = r"{\*\shppict{\pict\pngblip\picw800\pich600 " + lines + "}}"
    return {
        "generated: 2 MB formatted text": header + paragraph * 2600 + "}",
        "generated: 4 MB pictures": header + (paragraph * 20 + picture) * 4 + "}",
    }


def best_of(func: Callable[[str], object], source: str, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        func(source)
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    from striprtf.striprtf import rtf_to_text as striprtf_text

    from background_tasks.extraction.extractors.rtf import _fix_charsets, _read
    from background_tasks.extraction.extractors.rtf.convert import rtf_to_text

    sources = {p.name: _fix_charsets(_read(p)) for p in corpus_files() if p.suffix == ".rtf"}
    sources.update(generated())
    rows, total_old, total_new, differ = [], 0.0, 0.0, []
    for name, source in sorted(sources.items(), key=lambda item: -len(item[1])):
        old = best_of(lambda s: striprtf_text(s, errors="replace"), source, args.rounds)
        new = best_of(rtf_to_text, source, args.rounds)
        same = rtf_to_text(source)[0] == striprtf_text(source, errors="replace")
        if not same:
            differ.append(name)
        total_old, total_new = total_old + old, total_new + new
        ratio = f"{old / new:.1f}x" if new else "-"
        rows.append((name[:40], f"{len(source) / 1e6:.2f}", f"{old * 1000:.1f}", f"{new * 1000:.1f}", ratio, same))
    print_table(("file", "MB", "striprtf ms", "MIDAS ms", "faster", "same text"), rows)
    summary = f"striprtf {total_old:.2f} s, MIDAS {total_new:.2f} s: {total_old / total_new:.1f}x"
    print(f"\nall {len(sources)} files: {summary}")
    if differ:
        print(f"texts differ: {', '.join(differ)}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
