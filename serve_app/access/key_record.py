"""A managed key as stored: its view, the hash of its secret, and a web token's share of its minter."""

from __future__ import annotations

from typing import Optional

from serve_app.protocol.keys import KeyView


class StoredKey(KeyView):
    hash: str
    # A web token's share of its minter's budget: the minter's requests and tokens per minute
    # when it minted (0: unlimited). Its requests count in the minter's own windows too.
    minter_limits: Optional[tuple[int, int]] = None
    # A web token counts against its minter's quotas: the minter's quota fields when it minted.
    minter_quotas: Optional[dict[str, int]] = None

    def view(self) -> KeyView:
        return KeyView(**self.model_dump(exclude={"hash", "minter_limits", "minter_quotas"}))
