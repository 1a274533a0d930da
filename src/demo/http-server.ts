// A small HTTP server run inside a lab pod by `weft demo` and the tests: it answers every request
// with who it is and the address the connection came from (which, through the mesh, is the
// node proxy's, not the client pod's).
import http from 'node:http'

const [name = 'pod', portText = '8080'] = process.argv.slice(2)
const server = http.createServer((req, res) => {
  req.resume()
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ server: name, peer: `${req.socket.remoteAddress}:${req.socket.remotePort}`, path: req.url }) + '\n')
  })
})
server.listen(Number(portText), '0.0.0.0', () => { process.stdout.write(`listening ${name} ${portText}\n`) })
process.on('SIGTERM', () => { server.closeAllConnections(); server.close(() => process.exit(0)) })
