#!/usr/bin/env python3
"""Builds a real-text summarization dataset in the reference's schema ({"article", "highlights"})
from the manual pages installed on a Debian machine: each page's DESCRIPTION section is the article,
its one-line NAME summary the highlight. Standard library only.

    python3 examples/data/make_man_summaries.py [--man-dir /usr/share/man] [--max 3000] OUT.jsonl

The committed examples/data/man_summaries.jsonl was made by this script; its content depends on
which packages the machine had installed."""
import argparse
import gzip
import json
import os
import re
import sys

ESCAPES = [
    (r"\\f\[[A-Z]*\]", ""), (r"\\f[BIRP1-4]", ""), (r"\\f\(..", ""), (r"\\s[+-]?\d", ""),
    (r"\\\(em|\\\(en", "-"), (r"\\\(aq", "'"), (r"\\\(dq|\\\(lq|\\\(rq", '"'),
    (r"\\\(bu", "*"), (r"\\\(co", "(c)"), (r"\\\(..", ""), (r"\\\[[a-z]+\]", ""),
    (r"\\-", "-"), (r"\\e", "\\\\"), (r"\\&", ""), (r"\\ ", " "), (r"\\~", " "), (r"\\\|", ""),
    (r"\\\^", ""), (r"\\c", ""), (r'\\"', ""), (r"\\\*\(..", ""), (r"\\\*.", ""), (r"\\n\(..", ""),
]


def clean(text):
    for pat, rep in ESCAPES:
        text = re.sub(pat, rep, text)
    text = text.replace("\\", "")
    return re.sub(r"\s+", " ", text).strip()


def macro_text(line):
    """Text carried by a formatting macro line (.B foo, .BR a b), or None for layout macros."""
    m = re.match(r"^[.'](\S+)\s*(.*)$", line)
    if not m:
        return line
    name, rest = m.group(1), m.group(2)
    if name in ("B", "I", "SM", "SB"):
        return rest.replace('"', "")
    if name in ("BR", "RB", "IR", "RI", "BI", "IB"):
        return "".join(re.findall(r'"[^"]*"|\S+', rest)).replace('"', "")
    if name in ("TP", "IP") and rest:
        return rest.split('"')[1] if rest.startswith('"') else rest.split()[0]
    return None


def sections(src):
    secs, cur, name = {}, None, None
    for line in src.splitlines():
        m = re.match(r'^\.S[Hh]\s+"?([^"]*)"?\s*$', line)
        if m:
            name = m.group(1).strip().upper()
            cur = secs.setdefault(name, [])
            continue
        if cur is None or line.startswith(('.\\"', "'\\\"")):
            continue
        t = macro_text(line) if line.startswith((".", "'")) else line
        if t:
            cur.append(t)
    return {k: clean(" ".join(v)) for k, v in secs.items()}


def truncate(text, limit):
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = cut.rfind(". ")
    return cut[: end + 1] if end > limit // 2 else cut.rsplit(" ", 1)[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--man-dir", default="/usr/share/man")
    ap.add_argument("--max", type=int, default=3000)
    ap.add_argument("--article-chars", type=int, default=900)
    a = ap.parse_args()
    pairs, seen = [], set()
    for sub in ("man1", "man8", "man5", "man7", "man3"):
        d = os.path.join(a.man_dir, sub)
        if not os.path.isdir(d):
            continue
        for f in sorted(os.listdir(d)):
            path = os.path.join(d, f)
            try:
                opener = gzip.open if f.endswith(".gz") else open
                with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
                    src = fh.read()
            except OSError:
                continue
            if src.startswith(".so "):
                continue
            s = sections(src)
            name, desc = s.get("NAME", ""), s.get("DESCRIPTION", "")
            if " - " not in name or len(desc) < 200:
                continue
            title, summary = name.split(" - ", 1)
            summary = summary.strip().rstrip(".")
            if not (3 <= len(summary.split()) <= 20) or title in seen:
                continue
            seen.add(title)
            pairs.append({"article": truncate(desc, a.article_chars), "highlights": summary})
            if len(pairs) >= a.max:
                break
        if len(pairs) >= a.max:
            break
    if not pairs:
        sys.exit(f"no manual pages with NAME and DESCRIPTION under {a.man_dir}")
    with open(a.out, "w", encoding="utf-8") as out:
        for p in pairs:
            out.write(json.dumps(p, ensure_ascii=False) + "\n")
    print(f"wrote {len(pairs)} pairs to {a.out}")


if __name__ == "__main__":
    main()
