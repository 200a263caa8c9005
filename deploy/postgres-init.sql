-- One database per service: a service never reads another service's tables.
CREATE DATABASE orders;
CREATE DATABASE points;
CREATE DATABASE vouchers;
CREATE DATABASE referrals;
