"""The HTML report of a run: one self-contained page (page.py), each application writing its own
section (registered with convae.run.report_section); html.py holds the shared HTML pieces."""
