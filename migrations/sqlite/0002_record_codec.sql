-- How each decision record's bytes are stored: 0 the encoded protobuf as it is (every record
-- written before this migration), 1 the encoded protobuf compressed with zstd.
ALTER TABLE decisions ADD COLUMN record_codec INTEGER NOT NULL DEFAULT 0;
