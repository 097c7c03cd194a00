from sqlalchemy import Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.db import async_url, create_engine, create_schema, session_factory, transaction


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "rows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(20))


def test_async_url_picks_the_async_driver() -> None:
    assert async_url("postgresql://u@h/db").startswith("postgresql+psycopg://")
    assert async_url("sqlite:///x.db").startswith("sqlite+aiosqlite://")
    assert async_url("postgresql+asyncpg://u@h/db").startswith("postgresql+asyncpg://")


async def test_engine_roundtrip_and_idempotent_schema(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await create_schema(engine, Base)
        await create_schema(engine, Base)
        factory = session_factory(engine)
        async with transaction(factory) as s:
            s.add(Row(name="Case"))
        async with factory() as s:
            assert (await s.scalars(select(Row.name))).all() == ["Case"]
    finally:
        await engine.dispose()
