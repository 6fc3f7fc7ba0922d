"""The HTML report of a run: one self-contained page (page.py) that lists, in one ordered place,
the section each application writes. It sits above the applications; their shared HTML pieces
are convae.core.html."""
