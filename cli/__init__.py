"""The `embedstore` command line: option parsing and printing only; the work lives in the library."""
