//go:debug fips140=on
package broker_test
