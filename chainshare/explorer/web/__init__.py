"""The explorer's server-rendered pages for auditors (Jinja2), with in-browser proof verification."""
