-- 0001_reference_data.sql — reference data: currencies (ISO 4217, seeded),
-- merchants with fee plans and settlement cycles, terminals, issuers, issuer
-- endpoints (links) and BIN routes.  Loaded whole into each node's memory
-- and reloaded on `switchctl reload`, so no index beyond the keys.
--
-- Applied by `switchctl migrate` in one transaction with its row in
-- switch.schema_migrations.  Never edit this file once applied: add a new
-- numbered file.  Names are schema-qualified; no BEGIN/COMMIT here.

-- ISO 4217.  The numeric code is the key: it is what DE49/DE50/DE51 carry.
CREATE TABLE switch.currencies (
  numeric_code char(3) PRIMARY KEY CHECK (numeric_code ~ '^[0-9]{3}$'),
  alpha_code   char(3) NOT NULL UNIQUE CHECK (alpha_code ~ '^[A-Z]{3}$'),
  exponent     smallint NOT NULL CHECK (exponent BETWEEN 0 AND 4),
  name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 80)
);
COMMENT ON TABLE switch.currencies IS
  'ISO 4217 currencies; exponent = number of minor-unit digits';

INSERT INTO switch.currencies (numeric_code, alpha_code, exponent, name) VALUES
  ('840', 'USD', 2, 'US Dollar'),
  ('978', 'EUR', 2, 'Euro'),
  ('826', 'GBP', 2, 'Pound Sterling'),
  ('392', 'JPY', 0, 'Yen'),
  ('414', 'KWD', 3, 'Kuwaiti Dinar'),
  ('048', 'BHD', 3, 'Bahraini Dinar'),
  ('756', 'CHF', 2, 'Swiss Franc'),
  ('124', 'CAD', 2, 'Canadian Dollar'),
  ('036', 'AUD', 2, 'Australian Dollar'),
  ('554', 'NZD', 2, 'New Zealand Dollar'),
  ('752', 'SEK', 2, 'Swedish Krona'),
  ('578', 'NOK', 2, 'Norwegian Krone'),
  ('208', 'DKK', 2, 'Danish Krone'),
  ('985', 'PLN', 2, 'Zloty'),
  ('203', 'CZK', 2, 'Czech Koruna'),
  ('348', 'HUF', 2, 'Forint'),
  ('949', 'TRY', 2, 'Turkish Lira'),
  ('356', 'INR', 2, 'Indian Rupee'),
  ('156', 'CNY', 2, 'Yuan Renminbi'),
  ('344', 'HKD', 2, 'Hong Kong Dollar'),
  ('702', 'SGD', 2, 'Singapore Dollar'),
  ('410', 'KRW', 0, 'Won'),
  ('704', 'VND', 0, 'Dong'),
  ('352', 'ISK', 0, 'Iceland Krona'),
  ('152', 'CLP', 0, 'Chilean Peso'),
  ('600', 'PYG', 0, 'Guarani'),
  ('800', 'UGX', 0, 'Uganda Shilling'),
  ('952', 'XOF', 0, 'CFA Franc BCEAO'),
  ('950', 'XAF', 0, 'CFA Franc BEAC'),
  ('784', 'AED', 2, 'UAE Dirham'),
  ('682', 'SAR', 2, 'Saudi Riyal'),
  ('400', 'JOD', 3, 'Jordanian Dinar'),
  ('512', 'OMR', 3, 'Rial Omani'),
  ('788', 'TND', 3, 'Tunisian Dinar'),
  ('368', 'IQD', 3, 'Iraqi Dinar'),
  ('434', 'LYD', 3, 'Libyan Dinar'),
  ('710', 'ZAR', 2, 'Rand'),
  ('986', 'BRL', 2, 'Brazilian Real'),
  ('484', 'MXN', 2, 'Mexican Peso'),
  ('990', 'CLF', 4, 'Unidad de Fomento'),
  ('927', 'UYW', 4, 'Unidad Previsional');

-- Merchants (DE42, ans 15) with their fee plan: fee = amount * fee_bps /
-- 10000 + fee_fixed_minor (in fee_currency), settled T+settlement_days.
CREATE TABLE switch.merchants (
  merchant_id      varchar(15) PRIMARY KEY
                   CHECK (merchant_id ~ '^[0-9A-Za-z][0-9A-Za-z ]{0,14}$'),
  name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  mcc              char(4) NOT NULL CHECK (mcc ~ '^[0-9]{4}$'),
  status           text NOT NULL DEFAULT 'active'
                   CHECK (status IN ('active', 'suspended', 'closed')),
  fee_bps          integer NOT NULL DEFAULT 0 CHECK (fee_bps BETWEEN 0 AND 10000),
  fee_fixed_minor  bigint NOT NULL DEFAULT 0 CHECK (fee_fixed_minor >= 0),
  fee_currency     char(3) NOT NULL REFERENCES switch.currencies (numeric_code),
  settlement_days  smallint NOT NULL DEFAULT 1
                   CHECK (settlement_days BETWEEN 0 AND 30),
  created_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN switch.merchants.settlement_days IS 'settlement cycle T+N';

-- Key labels name keys in the HSM adapter's key store; never key material.
CREATE DOMAIN switch.key_label AS text
  CHECK (VALUE ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$');

-- Terminals (DE41, ans 8).
CREATE TABLE switch.terminals (
  terminal_id      varchar(8) PRIMARY KEY
                   CHECK (terminal_id ~ '^[0-9A-Za-z][0-9A-Za-z ]{0,7}$'),
  merchant_id      varchar(15) NOT NULL REFERENCES switch.merchants,
  status           text NOT NULL DEFAULT 'active'
                   CHECK (status IN ('active', 'blocked', 'retired')),
  profile          text NOT NULL DEFAULT 'default'
                   CHECK (profile ~ '^[a-z0-9_-]{1,32}$'),
  tmk_label        switch.key_label,
  tpk_label        switch.key_label,
  tak_label        switch.key_label,
  batch_no         integer NOT NULL DEFAULT 1 CHECK (batch_no BETWEEN 0 AND 999999),
  last_seen_at     timestamptz,
  last_sign_on_at  timestamptz
);
-- Terminals of one merchant (back office, settlement): the FK's lookup.
CREATE INDEX terminals_merchant ON switch.terminals (merchant_id);

CREATE TABLE switch.issuers (
  issuer_id        text PRIMARY KEY CHECK (issuer_id ~ '^[a-z0-9_-]{1,32}$'),
  name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  dialect          text NOT NULL CHECK (dialect ~ '^[a-z0-9_.-]{1,64}$'),
  status           text NOT NULL DEFAULT 'active'
                   CHECK (status IN ('active', 'suspended')),
  stand_in         boolean NOT NULL DEFAULT false
);

-- One endpoint is one link: its own STAN sequence and keys.
CREATE TABLE switch.issuer_endpoints (
  link_id          text PRIMARY KEY CHECK (link_id ~ '^[a-z0-9_-]{1,32}$'),
  issuer_id        text NOT NULL REFERENCES switch.issuers,
  host             text NOT NULL CHECK (length(host) BETWEEN 1 AND 253),
  port             integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
  priority         smallint NOT NULL DEFAULT 0,
  tls              boolean NOT NULL DEFAULT true,
  zpk_label        switch.key_label,
  zak_label        switch.key_label,
  max_in_flight    integer NOT NULL DEFAULT 256 CHECK (max_in_flight > 0),
  status           text NOT NULL DEFAULT 'active'
                   CHECK (status IN ('active', 'disabled'))
);
CREATE INDEX issuer_endpoints_issuer ON switch.issuer_endpoints (issuer_id);

-- BIN routes: a PAN routes to the route whose [prefix_low, prefix_high]
-- holds the PAN's first length(prefix_low) digits (text of digits, equal
-- lengths, so '4000' .. '4999' is a range and '411111' .. '411111' a single
-- prefix) and whose PAN length bounds hold; the highest priority wins,
-- then the longest prefix.
CREATE TABLE switch.bin_routes (
  route_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  prefix_low       text NOT NULL CHECK (prefix_low ~ '^[0-9]{1,12}$'),
  prefix_high      text NOT NULL CHECK (prefix_high ~ '^[0-9]{1,12}$'),
  pan_length_min   smallint NOT NULL DEFAULT 12,
  pan_length_max   smallint NOT NULL DEFAULT 19,
  issuer_id        text NOT NULL REFERENCES switch.issuers,
  priority         integer NOT NULL DEFAULT 0,
  CONSTRAINT bin_routes_equal_lengths
    CHECK (length(prefix_low) = length(prefix_high)),
  CONSTRAINT bin_routes_ordered CHECK (prefix_low <= prefix_high),
  CONSTRAINT bin_routes_pan_lengths
    CHECK (pan_length_min BETWEEN 12 AND 19 AND pan_length_max BETWEEN 12 AND 19
           AND pan_length_min <= pan_length_max
           AND length(prefix_low) < pan_length_min)
);

-- The back office reads everything; deploy/pg.sh's default privileges do
-- this too, stated again for databases provisioned another way.
GRANT SELECT ON ALL TABLES IN SCHEMA switch TO switch_reader;
