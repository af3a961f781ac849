"""The room: an instructor's view over every lab in one account (issue 19). Pure decisions only."""
