"""The only package that imports Faust: thin glue around app.domain."""
