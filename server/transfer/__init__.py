"""Moving data: `python -m server export` / `import` between stores (export.py), and importers
for the formats newsrooms migrate from, Disqus XML and WordPress WXR (legacy.py)."""
