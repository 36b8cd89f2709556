#!/usr/bin/env python3
"""Expand clip.1.scd: its line @COMMANDS@ becomes one entry per command page
given (clip-NAME.1.scd), from the page's NAME line, and @PAGES@ the list of
those pages, so that a new command's page is listed in clip(1) without an
edit there.

usage: commands.py clip.1.scd PAGE.scd... > clip.1.scd (expanded)
"""
import os
import re
import sys

main, pages = sys.argv[1], sys.argv[2:]
entries, names = [], []
for page in sorted(pages, key=os.path.basename):
    m = re.fullmatch(r"clip-(.+)\.1\.scd", os.path.basename(page))
    if not m:
        continue
    text = open(page).read()
    name = re.search(r"^# NAME\n\n(\S+) - (.+)$", text, re.M)
    if not name or name.group(1) != "clip-" + m.group(1):
        sys.exit("%s: no NAME line 'clip-%s - summary'" % (page, m.group(1)))
    summary = name.group(2)
    names.append("*clip-%s*(1)" % m.group(1))
    entries.append("*%s*\n\t%s%s. See *clip-%s*(1).\n" %
                   (m.group(1), summary[0].upper(), summary[1:], m.group(1)))
text = open(main).read()
for mark in ("@COMMANDS@\n", "@PAGES@"):
    if text.count(mark) != 1:
        sys.exit("%s: expected %s once" % (main, mark.strip()))
text = text.replace("@COMMANDS@\n", "\n".join(entries))
sys.stdout.write(text.replace("@PAGES@", ", ".join(names)))
