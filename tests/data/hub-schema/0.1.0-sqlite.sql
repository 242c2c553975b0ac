-- The hub's schema as edgeship 0.1.0 (before migrations, git 5506355) made it with
-- Base.metadata.create_all on sqlite: the DDL create_all emits, in its order.
-- Made once by compiling CreateTable/CreateIndex of that commit's models for this dialect;
-- never regenerate it from newer models: it stands for databases that exist in the field.
-- tests/hub/test_migrations.py loads it, fills it and upgrades it.

CREATE TABLE credentials (
	id INTEGER NOT NULL, 
	device_id VARCHAR(128) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	password_hash TEXT, 
	serial VARCHAR(64), 
	fingerprint VARCHAR(64), 
	created DATETIME NOT NULL, 
	revoked BOOLEAN NOT NULL, 
	revoked_at DATETIME, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_credentials_device_id ON credentials (device_id);

CREATE INDEX ix_credentials_revoked ON credentials (revoked);

CREATE TABLE deployments (
	id VARCHAR(128) NOT NULL, 
	target_condition TEXT NOT NULL, 
	priority INTEGER NOT NULL, 
	created DATETIME NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE devices (
	id VARCHAR(128) NOT NULL, 
	tags JSON NOT NULL, 
	created DATETIME NOT NULL, 
	last_sequence INTEGER NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE modules (
	name VARCHAR(128) NOT NULL, 
	version INTEGER NOT NULL, 
	envelope JSON NOT NULL, 
	manifest_digest VARCHAR(71) NOT NULL, 
	bundle_digest VARCHAR(71) NOT NULL, 
	image_digest VARCHAR(71), 
	variant VARCHAR(64) NOT NULL, 
	created DATETIME NOT NULL, 
	PRIMARY KEY (name, version)
);

CREATE TABLE tokens (
	name VARCHAR(128) NOT NULL, 
	digest VARCHAR(64) NOT NULL, 
	created DATETIME NOT NULL, 
	PRIMARY KEY (name), 
	UNIQUE (digest)
);

CREATE TABLE deployment_modules (
	deployment_id VARCHAR(128) NOT NULL, 
	module_name VARCHAR(128) NOT NULL, 
	module_version INTEGER NOT NULL, 
	settings JSON NOT NULL, 
	PRIMARY KEY (deployment_id, module_name), 
	FOREIGN KEY(module_name, module_version) REFERENCES modules (name, version), 
	FOREIGN KEY(deployment_id) REFERENCES deployments (id) ON DELETE CASCADE
);

CREATE TABLE desired (
	device_id VARCHAR(128) NOT NULL, 
	sequence INTEGER NOT NULL, 
	envelope TEXT NOT NULL, 
	fingerprint TEXT NOT NULL, 
	deployments JSON NOT NULL, 
	issued DATETIME NOT NULL, 
	expires DATETIME NOT NULL, 
	PRIMARY KEY (device_id, sequence), 
	FOREIGN KEY(device_id) REFERENCES devices (id) ON DELETE CASCADE
);

CREATE TABLE presence (
	device_id VARCHAR(128) NOT NULL, 
	online BOOLEAN NOT NULL, 
	last_seen DATETIME NOT NULL, 
	PRIMARY KEY (device_id), 
	FOREIGN KEY(device_id) REFERENCES devices (id) ON DELETE CASCADE
);

CREATE TABLE reported (
	device_id VARCHAR(128) NOT NULL, 
	state JSON NOT NULL, 
	received DATETIME NOT NULL, 
	PRIMARY KEY (device_id), 
	FOREIGN KEY(device_id) REFERENCES devices (id) ON DELETE CASCADE
);

CREATE TABLE telemetry (
	id INTEGER NOT NULL, 
	device_id VARCHAR(128) NOT NULL, 
	received DATETIME NOT NULL, 
	batch JSON NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(device_id) REFERENCES devices (id) ON DELETE CASCADE
);

CREATE INDEX ix_telemetry_device_id ON telemetry (device_id);
