#!/usr/bin/env python3
"""Writes nfc-table.txt, the Unicode data Fathom's NFC normalizer needs, from Python's unicodedata.

    python3 generate_nfc_table.py > nfc-table.txt

Lines (hex code points):
    u <version>            Unicode version of the data
    c <cp> <ccc>           canonical combining class, for every cp whose class is not 0
    d <cp> <cp> [<cp>]     canonical decomposition mapping (one level; Hangul syllables are algorithmic and omitted)
    x <cp>                 full composition exclusion: a cp with a canonical decomposition that NFC never composes
"""
import sys
import unicodedata

print(f"u {unicodedata.unidata_version}")
for cp in range(0x110000):
    if 0xD800 <= cp <= 0xDFFF:
        continue
    ch = chr(cp)
    ccc = unicodedata.combining(ch)
    if ccc:
        print(f"c {cp:X} {ccc}")
    decomposition = unicodedata.decomposition(ch)
    if not decomposition or decomposition.startswith("<"):
        continue
    if 0xAC00 <= cp <= 0xD7A3:
        continue
    parts = decomposition.split()
    print("d " + f"{cp:X} " + " ".join(parts))
    # Excluded from composition when NFC of its decomposition does not give it back.
    if unicodedata.normalize("NFC", unicodedata.normalize("NFD", ch)) != ch:
        print(f"x {cp:X}")
