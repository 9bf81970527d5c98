"""The Textual face. The only package that imports Textual."""
