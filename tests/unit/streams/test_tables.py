"""Table helpers: the RocksDB memory split."""


def test_rocksdb_memory_is_split_within_the_setting() -> None:
    from app.settings import load_settings
    from app.streams.app import TABLES, rocksdb_options

    for partitions, budget in ((8, 512), (24, 256), (1, 64)):
        opts = rocksdb_options(load_settings(partitions=partitions, store_memory_mib=budget))
        per_db = opts["write_buffer_size"] * opts["max_write_buffer_number"] + opts["block_cache_size"]
        assert per_db * TABLES * partitions <= budget * 1024**2
        assert per_db * TABLES * partitions >= budget * 1024**2 * 0.9
