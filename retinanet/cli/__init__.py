"""What the command-line scripts share beyond their flags: configuration files read into a parser."""
