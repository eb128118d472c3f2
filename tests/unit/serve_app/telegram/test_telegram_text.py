from serve_app.telegram.bot import TELEGRAM_LIMIT, Command, parse_command, split_message, utf16_len


def test_6000_character_answer_splits_into_two_parts_at_a_word_break():
    words = " ".join(f"w{i:04d}" for i in range(1000))  # 5999 characters
    text = words + "!"
    assert len(text) == 6000
    parts = split_message(text)
    assert len(parts) == 2
    assert all(0 < utf16_len(p) <= TELEGRAM_LIMIT for p in parts)
    assert "".join(parts) == text
    assert parts[0].endswith(" ") and parts[1][0] == "w"  # no word cut in two


def test_text_without_breaks_is_cut_hard_and_emoji_count_twice():
    parts = split_message("x" * 6000)
    assert [len(p) for p in parts] == [4096, 1904]
    emoji = "\U0001F600" * 3000  # 6000 UTF-16 units
    parts = split_message(emoji)
    assert [utf16_len(p) for p in parts] == [4096, 1904] and "".join(parts) == emoji


def test_short_text_is_one_part_and_paragraph_breaks_are_preferred():
    assert split_message("hello") == ["hello"]
    text = "a" * 3000 + "\n\n" + "b " * 1000 + "c" * 1000
    parts = split_message(text)
    assert parts[0] == "a" * 3000 + "\n\n"


def test_commands_with_and_without_botname():
    assert parse_command("/start") == Command("start", None, "")
    assert parse_command("/model@my_bot gemma3-270m") == Command("model", "my_bot", "gemma3-270m")
    assert parse_command("/Reset@My_Bot") == Command("reset", "My_Bot", "")
    assert parse_command("hello /start") is None
    assert parse_command("/") is None
    assert parse_command("/ spaced") is None
