"""The bundled model's card, readable inside QGIS: its Markdown rendered in a dialog (no browser, no raw file)."""

from __future__ import annotations

import re

from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout

from .help import model_card_path

#: Addresses of the project that are placeholders until it is published: shown as text, never as links.
PLACEHOLDERS = re.compile(r"https?://(?:github\.com/e2diffsr/|[\w.-]*example\.(?:org|com))[^\s)>\]]*")


def card_markdown() -> str:
    card = model_card_path()
    if card is None:
        return "# Model card\n\nThe model card is not part of this installation."
    text = card.read_text(encoding="utf-8")
    # [label](placeholder) -> label; a bare placeholder stays plain text (code, so it is not linked)
    text = re.sub(r"\[([^\]]+)\]\((" + PLACEHOLDERS.pattern + r")\)", r"\1", text)
    return PLACEHOLDERS.sub(lambda m: f"`{m.group(0)}`", text)


class ModelCardDialog(QDialog):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("e2diffsrModelCard")
        self.setWindowTitle("E2DiffSR: model card of the bundled model")
        layout = QVBoxLayout(self)
        self.browser = QTextBrowser()
        self.browser.setOpenExternalLinks(True)
        self.browser.setMarkdown(card_markdown())
        layout.addWidget(self.browser)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(820, 640)
