package dbusapi

import (
	"sort"
	"strings"
)

// The introspection data the service returns. docs/dbus-api.md embeds the
// same text (TestIntegrationIntrospect compares them); change both
// together, and never change a signature within a version.

// managerXML is returned for the manager object (api.DBusPath).
const managerXML = `<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
  <interface name="org.notifyd.Notifyd1.Manager">
    <method name="Subscribe">
      <arg name="filter" type="s" direction="in"/>
      <arg name="options" type="a{sv}" direction="in"/>
      <arg name="subscription" type="o" direction="out"/>
    </method>
    <method name="Sources">
      <arg name="sources" type="a(sssasssttt)" direction="out"/>
    </method>
    <method name="History">
      <arg name="since_seq" type="t" direction="in"/>
      <arg name="filter" type="s" direction="in"/>
      <arg name="records" type="h" direction="out"/>
      <arg name="count" type="u" direction="out"/>
    </method>
    <method name="AttachKeyWatch">
      <arg name="queue" type="h" direction="out"/>
      <arg name="owner" type="s" direction="out"/>
    </method>
    <property name="Version" type="u" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>
    </property>
    <property name="Epoch" type="t" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>
    </property>
    <property name="Seq" type="t" access="read"/>
    <property name="Subscribers" type="u" access="read"/>
    <property name="Published" type="t" access="read"/>
    <property name="Deliveries" type="t" access="read"/>
    <property name="Drops" type="t" access="read"/>
    <property name="Denials" type="t" access="read"/>
    <property name="HistoryLength" type="u" access="read"/>
    <property name="HistoryLowSeq" type="t" access="read"/>
  </interface>
  <interface name="org.freedesktop.DBus.ObjectManager">
    <method name="GetManagedObjects">
      <arg name="objects" type="a{oa{sa{sv}}}" direction="out"/>
    </method>
    <signal name="InterfacesAdded">
      <arg name="object" type="o"/>
      <arg name="interfaces" type="a{sa{sv}}"/>
    </signal>
    <signal name="InterfacesRemoved">
      <arg name="object" type="o"/>
      <arg name="interfaces" type="as"/>
    </signal>
  </interface>
` + stdXML + `  <node name="devices"/>
  <node name="subscription"/>
</node>
`

// subscriptionXML is returned for a subscription object.
const subscriptionXML = `<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
  <interface name="org.notifyd.Notifyd1.Subscription">
    <method name="Cancel"/>
    <signal name="Started">
      <arg name="epoch" type="t"/>
      <arg name="seq" type="t"/>
      <arg name="resumed" type="b"/>
      <arg name="recovered" type="b"/>
      <arg name="snapshot_seq" type="t"/>
      <arg name="snapshot_count" type="u"/>
    </signal>
    <signal name="Event">
      <arg name="seq" type="t"/>
      <arg name="time_usec" type="t"/>
      <arg name="source" type="s"/>
      <arg name="subtype" type="s"/>
      <arg name="origin" type="s"/>
      <arg name="tag" type="i"/>
      <arg name="object" type="s"/>
      <arg name="snapshot" type="b"/>
      <arg name="removed" type="b"/>
      <arg name="key_id" type="i"/>
      <arg name="key_aux" type="i"/>
      <arg name="key_type" type="s"/>
      <arg name="key_description" type="s"/>
      <arg name="major" type="u"/>
      <arg name="minor" type="u"/>
      <arg name="device" type="s"/>
      <arg name="sector" type="t"/>
      <arg name="usb_name" type="s"/>
      <arg name="usb_busnum" type="q"/>
      <arg name="usb_devnum" type="q"/>
      <arg name="usb_vendor" type="q"/>
      <arg name="usb_product" type="q"/>
      <arg name="usb_error" type="u"/>
      <arg name="props" type="a{ss}"/>
      <arg name="raw" type="ay"/>
    </signal>
    <signal name="Loss">
      <arg name="seq" type="t"/>
      <arg name="time_usec" type="t"/>
      <arg name="source" type="s"/>
      <arg name="origin" type="s"/>
      <arg name="count" type="t"/>
      <arg name="estimated" type="b"/>
      <arg name="from_seq" type="t"/>
      <arg name="to_seq" type="t"/>
      <arg name="tag" type="i"/>
      <arg name="reason" type="s"/>
    </signal>
    <signal name="Ended">
      <arg name="reason" type="s"/>
    </signal>
    <property name="Owner" type="s" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>
    </property>
    <property name="Filter" type="s" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>
    </property>
    <property name="Policy" type="s" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>
    </property>
    <property name="QueueLength" type="u" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>
    </property>
    <property name="QueueDepth" type="u" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="false"/>
    </property>
    <property name="Delivered" type="t" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="false"/>
    </property>
    <property name="Lost" type="t" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="false"/>
    </property>
    <property name="LossEvents" type="t" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="false"/>
    </property>
    <property name="Denied" type="t" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="false"/>
    </property>
    <property name="Sources" type="as" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>
    </property>
    <property name="DeniedSources" type="a(ss)" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>
    </property>
  </interface>
` + stdXML + `</node>
`

// stdXML lists the standard interfaces every object implements.
const stdXML = `  <interface name="org.freedesktop.DBus.Properties">
    <method name="Get">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="property_name" type="s" direction="in"/>
      <arg name="value" type="v" direction="out"/>
    </method>
    <method name="GetAll">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="properties" type="a{sv}" direction="out"/>
    </method>
    <method name="Set">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="property_name" type="s" direction="in"/>
      <arg name="value" type="v" direction="in"/>
    </method>
    <signal name="PropertiesChanged">
      <arg name="interface_name" type="s"/>
      <arg name="changed_properties" type="a{sv}"/>
      <arg name="invalidated_properties" type="as"/>
    </signal>
  </interface>
  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect">
      <arg name="xml_data" type="s" direction="out"/>
    </method>
  </interface>
  <interface name="org.freedesktop.DBus.Peer">
    <method name="Ping"/>
    <method name="GetMachineId">
      <arg name="machine_uuid" type="s" direction="out"/>
    </method>
  </interface>
`

// parentXML lists child nodes (the caller's own subscriptions under the
// subscription parent).
func parentXML(children []string) string {
	sort.Strings(children)
	var b strings.Builder
	b.WriteString(`<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
`)
	b.WriteString(`  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect">
      <arg name="xml_data" type="s" direction="out"/>
    </method>
  </interface>
`)
	for _, c := range children {
		b.WriteString(`  <node name="` + c + `"/>` + "\n")
	}
	b.WriteString("</node>\n")
	return b.String()
}

// deviceIfaceXML is the introspection of each device-object interface.
var deviceIfaceXML = map[string]string{
	"org.notifyd.Notifyd1.Device": `  <interface name="org.notifyd.Notifyd1.Device">
    <property name="Source" type="s" access="read"/>
    <property name="Name" type="s" access="read"/>
    <property name="Description" type="s" access="read"/>
    <property name="State" type="s" access="read"/>
    <property name="LastEvent" type="s" access="read"/>
    <property name="Seq" type="t" access="read"/>
    <property name="Epoch" type="t" access="read"/>
    <property name="Time" type="t" access="read"/>
    <property name="Errors" type="t" access="read"/>
    <property name="LastError" type="s" access="read"/>
  </interface>
`,
	"org.notifyd.Notifyd1.Block": `  <interface name="org.notifyd.Notifyd1.Block">
    <property name="Major" type="u" access="read"/>
    <property name="Minor" type="u" access="read"/>
    <property name="Device" type="s" access="read"/>
    <property name="Vendor" type="s" access="read"/>
    <property name="Model" type="s" access="read"/>
    <property name="Serial" type="s" access="read"/>
    <property name="WWID" type="s" access="read"/>
    <property name="Size" type="t" access="read"/>
    <property name="Removable" type="b" access="read"/>
    <property name="ReadOnly" type="b" access="read"/>
    <property name="Partition" type="u" access="read"/>
    <property name="Parent" type="s" access="read"/>
    <property name="BackingFile" type="s" access="read"/>
    <property name="Label" type="s" access="read"/>
    <property name="FSType" type="s" access="read"/>
    <property name="MountPoints" type="as" access="read"/>
  </interface>
`,
	"org.notifyd.Notifyd1.USB": `  <interface name="org.notifyd.Notifyd1.USB">
    <property name="Busnum" type="q" access="read"/>
    <property name="Devnum" type="q" access="read"/>
    <property name="VendorID" type="q" access="read"/>
    <property name="ProductID" type="q" access="read"/>
    <property name="Speed" type="s" access="read"/>
    <property name="Manufacturer" type="s" access="read"/>
    <property name="Product" type="s" access="read"/>
    <property name="Serial" type="s" access="read"/>
    <property name="VendorName" type="s" access="read"/>
    <property name="ProductName" type="s" access="read"/>
    <property name="DeviceClass" type="y" access="read"/>
    <property name="DeviceClassName" type="s" access="read"/>
    <property name="PortPath" type="s" access="read"/>
  </interface>
`,
	"org.notifyd.Notifyd1.Mount": `  <interface name="org.notifyd.Notifyd1.Mount">
    <property name="ID" type="t" access="read"/>
    <property name="ParentID" type="t" access="read"/>
    <property name="Point" type="s" access="read"/>
    <property name="Root" type="s" access="read"/>
    <property name="Source" type="s" access="read"/>
    <property name="FSType" type="s" access="read"/>
    <property name="Options" type="s" access="read"/>
    <property name="ReadOnly" type="b" access="read"/>
    <property name="Major" type="u" access="read"/>
    <property name="Minor" type="u" access="read"/>
  </interface>
`,
}

// deviceXML describes a device object with the given interfaces.
func deviceXML(ifaces []string) string {
	var b strings.Builder
	b.WriteString(`<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
`)
	for _, i := range ifaces {
		b.WriteString(deviceIfaceXML[i])
	}
	b.WriteString(stdXML)
	b.WriteString("</node>\n")
	return b.String()
}
