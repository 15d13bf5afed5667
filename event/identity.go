package event

import (
	"strconv"
	"strings"
)

// DisplayName is what an applet calls the device: the vendor and product
// names from the USB ID database, else the device's own manufacturer and
// product strings ("SanDisk Corp. Ultra Fit"); "" when nothing is known.
// A vendor name the product name already starts with is not repeated.
func (u *USBFields) DisplayName() string {
	vendor, product := u.VendorName, u.ProductName
	if vendor == "" {
		vendor = u.Manufacturer
	}
	if product == "" {
		product = u.Product
	}
	return joinName(vendor, product)
}

// DisplayName is what an applet calls the disk: vendor and model
// ("QEMU QEMU HARDDISK", "Samsung SSD 970"), else the filesystem label;
// "" when nothing is known.
func (b *BlockFields) DisplayName() string {
	if n := joinName(b.Vendor, b.Model); n != "" {
		return n
	}
	return b.Label
}

func joinName(vendor, product string) string {
	switch {
	case vendor == "":
		return product
	case product == "":
		return vendor
	case strings.HasPrefix(product, vendor):
		return product
	}
	return vendor + " " + product
}

// FormatSize renders a byte count as a human size in binary units with
// one decimal ("16.0 MiB", "931.5 GiB"; "512 B").
func FormatSize(n uint64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatUint(n, 10) + " B"
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + units[i:i+1] + "iB"
}
