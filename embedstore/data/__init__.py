"""Reading user data: text files with line-numbered errors, task tables, row selection, text ids."""
